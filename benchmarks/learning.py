"""How fast and how reliably the `tiny` models learn the synthetic data: `senformer train` of the
tiny S-Enformer and the same model with full attention over several seeds, each with the tiny
recipe on human data, and per run the steps until the validation mean Pearson r (over the four
track types) first reaches a threshold, the best mean r, and CAGE r (the track type that needs
enhancers beyond the conv tower's reach).

    .venv/bin/python benchmarks/learning.py [--seeds 0 1 2] [--steps 600] [--eval-every 25]
                                            [--threshold 0.5] [--attention sparse full]
                                            [--data SYNTH_DIR] [--out DIR] [--plot FILE] [--json]
                                            [--set FIELD=JSON ...]

`--set` changes the tiny recipe (a TrainConfig field, e.g. `beta2=0.99`) or the tiny model (a
ModelConfig field, e.g. `dropout_rate=0.1`) for every run.

Runs go to `--out` (default: a temporary directory) as ordinary run directories; an existing run
that already reached `--steps` is reused. Prints one table row per run and, per model, the mean
and the worst over the seeds; `--plot` draws every run's validation curves (mean r and CAGE r).
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
from pathlib import Path

TYPES = ("dnase_atac", "chip_histone", "chip_tf", "cage")


def train_run(out: Path, data: Path, attention: str, seed: int, steps: int, eval_every: int,
              extra: list[str]) -> Path:
    """`senformer train` of the tiny preset (human data, the tiny recipe) unless `out` already
    holds a run of `steps` steps."""
    from senformer_cli.config import ModelConfig, TrainConfig
    from senformer_cli.training import RunPlan, run_plan

    metrics = out / "metrics.csv"
    if metrics.is_file():
        rows = list(csv.DictReader(metrics.open()))
        if rows and int(rows[-1]["step"]) >= steps:
            return out
    fields = {**TrainConfig.for_preset("tiny").to_dict(), "steps": steps, "eval_every": eval_every,
              "checkpoint_every": steps, "seed": seed, "data": {"human": str(data / "human")},
              "genomes": {"human": str(data / "human.fa")}}
    model_fields = {"attention": attention}
    for item in extra:
        key, value = item.split("=", 1)
        (fields if key in fields else model_fields)[key] = json.loads(value)
    model = ModelConfig.from_preset("tiny", **model_fields)
    plan = RunPlan(run_dir=out, preset="tiny", model_config=model, train_config=TrainConfig(**fields),
                   resume=False, notices=[], new_heads=[])
    run_plan(plan)
    return out


def curve(run: Path) -> list[dict[str, float]]:
    """The validation rows of a run: step, mean r and r per track type."""
    rows = []
    for row in csv.DictReader((run / "metrics.csv").open()):
        if row.get("valid_mean_r"):
            rows.append({"step": int(row["step"]), "mean_r": float(row["valid_mean_r"]),
                         **{t: float(row[f"valid_r_human_{t}"]) for t in TYPES}})
    return rows


def summarise(rows: list[dict[str, float]], threshold: float) -> dict[str, float | None]:
    reached = [r["step"] for r in rows if r["mean_r"] >= threshold]
    best = max(rows, key=lambda r: r["mean_r"])
    return {"steps_to_threshold": reached[0] if reached else None, "best_step": best["step"],
            "best_mean_r": best["mean_r"], **{f"best_{t}": best[t] for t in TYPES},
            "final_mean_r": rows[-1]["mean_r"], "final_cage": rows[-1]["cage"]}


def plot(runs: dict[tuple[str, int], list[dict[str, float]]], threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({attention for attention, _ in runs}, reverse=True)  # sparse first
    figure, axes = plt.subplots(len(models), 2, figsize=(10, 3.2 * len(models)), sharex=True,
                                sharey=True, squeeze=False)
    seeds = sorted({seed for _, seed in runs})
    colours = {seed: plt.get_cmap("tab10")(i % 10) for i, seed in enumerate(seeds)}
    for (attention, seed), rows in sorted(runs.items()):
        left, right = axes[models.index(attention)]
        steps = [r["step"] for r in rows]
        left.plot(steps, [r["mean_r"] for r in rows], color=colours[seed], label=f"seed {seed}")
        right.plot(steps, [r["cage"] for r in rows], color=colours[seed])
    for row, attention in zip(axes, models):
        name = "S-Enformer" if attention == "sparse" else "Enformer"
        row[0].axhline(threshold, color="grey", linewidth=0.8)
        row[0].set_title(f"{name}: validation mean r (4 track types)")
        row[1].set_title(f"{name}: validation CAGE r")
        row[0].set_ylabel("Pearson r")
        row[0].legend(fontsize=7, ncol=2)
    for axis in axes.ravel():
        axis.grid(alpha=0.3)
    for axis in axes[-1]:
        axis.set_xlabel("training step")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--attention", nargs="+", default=["sparse", "full"])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--data", type=Path, help="synthetic data (default: the cached set)")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: temporary)")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        help="FIELD=JSON over the tiny recipe: a train field (learning_rate=0.002) "
                             "or a model field (dropout_rate=0.1)")
    parser.add_argument("--plot", type=Path, help="write the curves to this PNG")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from senformer_cli.data.synthetic import ensure_synthetic

    data = args.data or ensure_synthetic()
    results, curves = [], {}
    with tempfile.TemporaryDirectory(prefix="senformer-bench-learning-") as tmp:
        root = args.out or Path(tmp)
        for seed in args.seeds:  # seed by seed, so a partial run compares both models
            for attention in args.attention:
                run = train_run(root / f"{attention}-seed{seed}", data, attention, seed, args.steps,
                                args.eval_every, args.extra)
                rows = curve(run)
                curves[(attention, seed)] = rows
                results.append({"attention": attention, "seed": seed,
                                **summarise(rows, args.threshold)})
                if not args.json:
                    r = results[-1]
                    print(f"{attention} seed {seed}: steps to r>={args.threshold} "
                          f"{r['steps_to_threshold']}, best mean r {r['best_mean_r']:.3f} "
                          f"(step {r['best_step']}), CAGE {r['best_cage']:.3f}", flush=True)
        if args.plot:
            plot(curves, args.threshold, args.plot)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"\n| model | seed | steps to mean r ≥ {args.threshold} | best mean r (step) | "
          "DNase | histone | TF | CAGE |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        name = "S-Enformer" if r["attention"] == "sparse" else "Enformer"
        print(f"| {name} | {r['seed']} | {r['steps_to_threshold'] or f'> {args.steps}'} | "
              f"{r['best_mean_r']:.3f} ({r['best_step']}) | "
              + " | ".join(f"{r[f'best_{t}']:.3f}" for t in TYPES) + " |")
    for attention in args.attention:
        mine = [r for r in results if r["attention"] == attention]
        steps = [r["steps_to_threshold"] for r in mine]
        worst = "never" if None in steps else max(steps)
        print(f"{attention}: steps to r ≥ {args.threshold}: mean "
              f"{statistics.mean(s for s in steps if s is not None) if any(steps) else 'n/a'}, "
              f"worst {worst}; best CAGE r mean {statistics.mean(r['best_cage'] for r in mine):.3f}")


if __name__ == "__main__":
    main()
