"""Long-range check on the synthetic data: does a base change in an enhancer motif, more than 3 kb
from a promoter, move the CAGE prediction at the promoter it drives, and much less at a promoter
it cannot drive (an insulator motif between them)?

    python examples/receptive_field_enhancer.py runs/tiny --data SYNTH_DIR
    python examples/receptive_field_enhancer.py runs/tiny-full --data SYNTH_DIR --json
    python examples/receptive_field_enhancer.py tiny --data SYNTH_DIR      # untrained: plumbing only

SYNTH_DIR is what `senformer data synth SYNTH_DIR` (or training on the synthetic data) wrote:
`ground_truth.json`, `<organism>.fa` and `<organism>/targets.txt`. Without --data the cached
synthetic set of `ensure_synthetic(0)` is used when that function exists.

For each chosen promoter the model's input window is cut from the organism's FASTA with the
promoter motif's centre in the middle of the output window (its CAGE bin). Then every base of
the chosen enhancer motif is changed to each of the three other bases (a 12-bp motif gives 36
mutants); the effect of a mutant is |mutant - reference| at the promoter's bin, averaged over the
CAGE tracks. Pairs:
  - driven: the promoter and an enhancer that drives it (within the rule's maximum distance, no
    insulator motif between them), more than --min-distance bp apart;
  - blocked: a promoter that is not driven and an enhancer within the maximum distance with an
    insulator motif between them (the rule says it cannot act on this promoter).
References and mutants go through `receptive_field.Predictor` (paired layout: each mutant in its
reference's row of an equally shaped batch), and the noise floor is the largest difference
between copies of the same reference at different rows of a batch. A promoter more than the conv
tower's reach away from the mutated base can only be moved through attention; the script checks
this with the theoretical field and says so.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def find_data(data: Path | None) -> Path:
    if data is not None:
        return data
    try:
        from senformer_cli.data.synthetic import ensure_synthetic
    except ImportError:
        raise SystemExit("give --data SYNTH_DIR (written by `senformer data synth SYNTH_DIR`)") from None
    return ensure_synthetic(0)


def choose_pairs(truth: dict, organism: str, sequence_length: int, min_distance: int,
                 max_pairs: int, rng: np.random.Generator) -> dict[str, list[dict]]:
    """Up to `max_pairs` (promoter, enhancer) pairs per group whose enhancer motif lies inside the
    input window centred on the promoter."""
    from senformer_cli.data.synthetic import MOTIFS

    half = sequence_length // 2
    promoter_half = len(MOTIFS["promoter"]) // 2
    groups: dict[str, list[dict]] = {"driven": [], "blocked": []}
    for promoter in truth["organisms"][organism]["promoters"]:
        centre = promoter["position"] + promoter_half
        for enhancer in promoter["enhancers"]:
            start = enhancer["position"] - (centre - half)  # motif start in the window
            inside = 0 <= start and start + len(MOTIFS["enhancer"]) <= sequence_length
            if not inside or abs(enhancer["distance_bp"]) <= min_distance:
                continue
            if promoter["driven"] and not enhancer["blocked_by"]:
                group = "driven"
            elif not promoter["driven"] and enhancer["blocked_by"]:
                group = "blocked"
            else:
                continue
            groups[group].append({"chrom": promoter["chrom"], "promoter": promoter["position"],
                                  "centre": centre, "enhancer": enhancer["position"],
                                  "distance_bp": enhancer["distance_bp"],
                                  "blocked_by": enhancer["blocked_by"]})
            break  # one enhancer per promoter
    for group, pairs in groups.items():
        if len(pairs) > max_pairs:
            keep = np.sort(rng.choice(len(pairs), max_pairs, replace=False))
            groups[group] = [pairs[i] for i in keep]
    return groups


def measure_pair(pair: dict, genome, predictor, calculator, config, batch_size: int) -> dict:
    from senformer_cli.data.synthetic import MOTIFS

    length, bin_size = config.sequence_length, config.bin_size
    window_start = pair["centre"] - length // 2
    codes = genome.codes(pair["chrom"], window_start, window_start + length)
    promoter_bin = (length // 2) // bin_size - calculator.crop_tokens
    motif_start = pair["enhancer"] - window_start
    mutants = []
    for offset in range(len(MOTIFS["enhancer"])):
        for shift in (1, 2, 3):
            mutant = codes.copy()
            position = motif_start + offset
            mutant[position] = (mutant[position] + shift) % 4
            mutants.append((position, mutant))
    one_hot = np.eye(5, 4, dtype=np.float32)
    effects, noise, reference_cage = [], 0.0, None
    for k in range(0, len(mutants), batch_size):
        chunk = mutants[k:k + batch_size]
        references = np.repeat(one_hot[codes][None], len(chunk), axis=0)
        x_mut = np.stack([one_hot[m] for _, m in chunk])
        # Every mutant of a chunk changes a base within the motif: one window covers them all,
        # but the local path is per position, so the whole pass is used here.
        out_ref, out_mut = predictor.pair(references, x_mut, chunk[0][0])
        reference_cage = float(out_ref[0, promoter_bin].mean())
        if len(chunk) > 1:
            noise = max(noise, float(np.abs(out_ref - out_ref[:1]).max()))
        effects += np.abs(out_mut[:, promoter_bin] - out_ref[:, promoter_bin]).mean(axis=-1).tolist()
    conv = calculator.field(motif_start).conv_bins
    return {**pair, "promoter_bin": promoter_bin, "reference_cage": reference_cage,
            "mean_effect": float(np.mean(effects)), "max_effect": float(np.max(effects)),
            "noise_floor": noise,
            "conv_tower_reaches_promoter": bool(conv is not None and conv[0] <= promoter_bin <= conv[1])}


def run(args: argparse.Namespace) -> dict:
    from senformer_cli import receptive_field as rf
    from senformer_cli.config import parse_overrides
    from senformer_cli.data.basenji import find_targets_sheet
    from senformer_cli.data.genome import Genome
    from senformer_cli.data.targets import read_targets
    from senformer_cli.model.load import load_model

    data = find_data(args.data)
    truth = json.loads((data / "ground_truth.json").read_text())
    loaded = load_model(args.model, parse_overrides(args.set or []))
    description = loaded.description
    if loaded.kind == "preset":
        description += "; " + rf.make_untrained_informative(loaded.model, loaded.config.random_seed)
    config, organism = loaded.config, args.organism
    sheet = read_targets(find_targets_sheet(data / organism))
    cage = [int(i) for i in np.flatnonzero(sheet["track_type"].to_numpy() == "cage")]
    if organism not in config.heads or config.heads[organism] != len(sheet):
        raise SystemExit(f"the model's head '{organism}' does not match {len(sheet)} tracks of "
                         f"{data / organism}")
    genome = Genome(data / truth["organisms"][organism]["genome"])
    calculator = rf.FieldCalculator(loaded.model)
    predictor = rf.Predictor(loaded.model, organism, cage, layout="paired", local=False)
    groups = choose_pairs(truth, organism, config.sequence_length, args.min_distance,
                          args.max_pairs, np.random.default_rng(args.seed))
    results = {group: [measure_pair(pair, genome, predictor, calculator, config, args.batch_size)
                       for pair in pairs] for group, pairs in groups.items()}
    noise = max([r["noise_floor"] for rs in results.values() for r in rs] or [0.0])
    summary = {}
    for group, rows in results.items():
        effects = np.array([r["mean_effect"] for r in rows])
        summary[group] = {"pairs": len(rows),
                          "median_mean_effect": float(np.median(effects)) if len(rows) else None,
                          "above_noise_floor": int((effects > noise).sum()),
                          "median_distance_bp": float(np.median([abs(r["distance_bp"]) for r in rows]))
                          if rows else None}
    driven, blocked = (summary[g]["median_mean_effect"] for g in ("driven", "blocked"))
    return {"model": args.model, "description": description, "data": str(data), "organism": organism,
            "cage_tracks": cage, "noise_floor": noise, "summary": summary,
            "driven_over_blocked": driven / blocked if driven is not None and blocked else None,
            "conv_tower_reaches_a_promoter": any(r["conv_tower_reaches_promoter"]
                                                 for rs in results.values() for r in rs),
            "pairs": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="run directory (or any --model spec of senformer)")
    parser.add_argument("--data", type=Path, default=None, help="synthetic data directory")
    parser.add_argument("--organism", default="human")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override")
    parser.add_argument("--max-pairs", type=int, default=8, help="pairs per group")
    parser.add_argument("--min-distance", type=int, default=3000, help="bp between the motifs")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="which pairs, when there are more")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['model']}: {report['description']}")
    print(f"CAGE tracks {report['cage_tracks']} of head {report['organism']}; noise floor "
          f"{report['noise_floor']:.3g}")
    print("| group | chrom | promoter | enhancer | distance bp | insulators | CAGE ref | mean |dCAGE| "
          "| max |dCAGE| |")
    print("|---|---|---|---|---|---|---|---|---|")
    for group, rows in report["pairs"].items():
        for r in rows:
            print(f"| {group} | {r['chrom']} | {r['promoter']:,} | {r['enhancer']:,} | "
                  f"{r['distance_bp']:+,} | {len(r['blocked_by'])} | {r['reference_cage']:.3g} | "
                  f"{r['mean_effect']:.3g} | {r['max_effect']:.3g} |")
    for group, s in report["summary"].items():
        median = "-" if s["median_mean_effect"] is None else f"{s['median_mean_effect']:.3g}"
        print(f"{group}: {s['pairs']} pairs, median mean |dCAGE| {median}, "
              f"{s['above_noise_floor']} above the noise floor")
    if report["driven_over_blocked"] is not None:
        print(f"driven / blocked: {report['driven_over_blocked']:.2f}x")
    print("the conv tower reaches " + ("a promoter (distance too short!)"
                                       if report["conv_tower_reaches_a_promoter"]
                                       else "none of the promoters: every change is carried by attention"))


if __name__ == "__main__":
    main()
