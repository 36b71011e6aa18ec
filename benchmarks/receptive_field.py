"""`senformer receptive-field` throughput against the bare batched forward pass of the same model.

    python benchmarks/receptive_field.py                          # tiny, full and sparse attention
    python benchmarks/receptive_field.py --set sequence_length=8192 --set target_length=32 --json
    python benchmarks/receptive_field.py --default-run            # also time the default command

For each attention kind the untrained `tiny` preset is prepared as the command prepares it, then
for `--rounds` rounds, interleaved so that a busy machine slows every variant alike:
  - bare: `model(x)[head]` in a `tf.function` on pre-made one-hot batches of `--batch-size`
    random sequences (inputs made before the clock starts; output fetched to numpy);
  - measure: `receptive_field.measure` with the same batch size (drawing the sequences, one-hot
    encoding, the reference and mutant passes, |difference| per bin, the noise-floor batches);
  - measure --local: the same with the mutants' conv tower recomputed on a window only.
Rates are sequences per second (a reference and its mutant count as two; the noise-floor passes
count too). The ratios are the median over rounds of each round's own ratio: the three variants of
a round run back to back, so a host whose speed drifts between rounds (this project's 2-core VM
ran the same bare pass at 25 and at 18 seq/s ten minutes apart) moves both sides of a ratio alike;
the rates shown are the medians. The goal (issue 10): measure >= 0.95x bare, local > 1x.
`--default-run` times `senformer receptive-field` with no options end to end (model loading and
TensorFlow start-up included) in a fresh process; the goal is under 2 minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bare_rate(model, head: str, batch_size: int, batches: int, seed: int) -> float:
    """Sequences per second of the bare forward pass on `batches` batches."""
    import numpy as np
    import tensorflow as tf

    length = model.config.sequence_length
    spec = tf.TensorSpec([None, length, 4], tf.float32)
    forward = tf.function(lambda x: model(x, is_training=False)[head], input_signature=[spec],
                          autograph=False)
    rng = np.random.default_rng(seed)
    inputs = [np.eye(4, dtype=np.float32)[rng.integers(0, 4, (batch_size, length))]
              for _ in range(min(batches, 4))]
    forward(inputs[0]).numpy()
    start = time.perf_counter()
    for i in range(batches):
        forward(inputs[i % len(inputs)]).numpy()
    return batches * batch_size / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> dict:
    import numpy as np

    from senformer_cli import receptive_field as rf
    from senformer_cli.config import parse_overrides
    from senformer_cli.model.load import load_model

    overrides = parse_overrides(args.set or [])
    results = []
    for attention in args.attention:
        loaded = load_model(args.preset, {**overrides, "attention": attention})
        rf.make_untrained_informative(loaded.model, loaded.config.random_seed)
        item = rf.ModelSpec(attention, loaded.model, loaded.config, loaded.description)
        sequences = 2 * args.positions * args.repeats
        batches = max(1, round(sequences / args.batch_size))
        rates: dict[str, list[float]] = {"bare": [], "measure": [], "measure_local": []}
        for round_ in range(args.rounds):
            rates["bare"].append(bare_rate(loaded.model, args.head, args.batch_size, batches, round_))
            for key, local in (("measure", False), ("measure_local", True)):
                measured = rf.measure([item], positions=args.positions, repeats=args.repeats,
                                      head=args.head, seed=round_, batch_size=args.batch_size,
                                      local=local).models[0]
                rates[key].append(measured.sequences_per_second)
        median = {key: float(np.median(values)) for key, values in rates.items()}
        bare = np.array(rates["bare"])
        results.append({
            "attention": attention, "sequence_length": loaded.config.sequence_length,
            "batch_size": args.batch_size, "positions": args.positions, "repeats": args.repeats,
            "rounds": rates, "bare_seq_per_s": median["bare"], "measure_seq_per_s": median["measure"],
            "local_seq_per_s": median["measure_local"],
            "measure_vs_bare": float(np.median(np.array(rates["measure"]) / bare)),
            "local_vs_bare": float(np.median(np.array(rates["measure_local"]) / bare)),
        })
    report = {"preset": args.preset, "overrides": overrides, "cpus": os.cpu_count(), "models": results}
    if args.default_run:
        report["default_run"] = default_run()
    return report


def default_run() -> dict:
    """`senformer receptive-field` with no options, in a fresh process, in an empty folder (so the
    untrained presets are used), wall-clock seconds end to end."""
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "senformer_cli", "receptive-field", "--json"],
                              cwd=folder, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"default run failed: {done.stderr.strip().splitlines()[-1:]}")
    summary = json.loads(done.stdout)
    return {"seconds": seconds, "command": "senformer receptive-field (positions 9, repeats 100)",
            "sequences_per_s": [m["sequences_per_second"] for m in summary["models"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override")
    parser.add_argument("--attention", nargs="+", default=["full", "sparse"])
    parser.add_argument("--positions", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--head", default="human")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--default-run", action="store_true",
                        help="also time the default `senformer receptive-field` end to end")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    args = parser.parse_args()
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.preset} preset {report['overrides'] or ''}, {args.positions} positions x "
          f"{args.repeats} repeats, batches of {args.batch_size}, median of {args.rounds} rounds, "
          f"{report['cpus']} CPUs")
    print("| attention | input bp | bare seq/s | measure seq/s | x bare | --local seq/s | x bare |")
    print("|---|---|---|---|---|---|---|")
    for m in report["models"]:
        print(f"| {m['attention']} | {m['sequence_length']:,} | {m['bare_seq_per_s']:.1f} | "
              f"{m['measure_seq_per_s']:.1f} | {m['measure_vs_bare']:.2f}x | "
              f"{m['local_seq_per_s']:.1f} | {m['local_vs_bare']:.2f}x |")
    if "default_run" in report:
        run_ = report["default_run"]
        print(f"default run ({run_['command']}): {run_['seconds']:.1f} s end to end")


if __name__ == "__main__":
    main()
