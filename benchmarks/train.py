"""`senformer train`'s step speed: steps/s of the `tiny` and `small` presets on one device, fp32
and bf16 (and optionally XLA), and the loader's share of the step time.

    .venv/bin/python benchmarks/train.py [--presets tiny small] [--variants fp32 bf16 fp32-xla]
                                         [--steps 12] [--warmup 2] [--batch-size tiny=4 small=1]
                                         [--json]

For each preset and variant (seeded random weights; speed does not depend on them):

- **Training loop:** `senformer train` itself (the library call `training.train`) on synthetic
  data of the preset's shapes (`tiny`: 32,768 bp with FASTA flanks, 16 tracks; `small`: 131,072
  bp, 5,313 tracks), human only, `--warmup` + `--steps` steps, the loader's augmentation on. Its
  own steps/s excludes each head's first (tracing) step; the warm-up steps are left out here too.
- **Fixed batch:** the same compiled training step (`training._step_function`: forward, Poisson
  loss, gradients, global-norm clipping, Adam) on one batch held in memory, median of `--steps`.
- **Loader alone:** the training input pipeline (`load_dataset`: TFRecords, FASTA flanks,
  reverse complement, shift, shuffle, batching) iterated without a model, seconds per batch.

The loader's share is given two ways: its time alone over the loop's step time (what it would
cost if nothing overlapped) and (loop step − fixed step) / loop step (what it costs with tf.data's
prefetching overlapping it with the step). The goals (issue 8): share < 5%; `tiny` batch 4 ≤ 0.25
s a step.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

SYNTH_PRESET = {"tiny": "tiny", "small": "small"}
BATCH_SIZES = {"tiny": 4, "small": 1}  # the issue's `tiny` batch; `small` fits one sequence
VARIANTS = {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"},
            "fp32-xla": {"precision": "fp32", "jit_compile": True},
            "bf16-xla": {"precision": "bf16", "jit_compile": True}}


def write_data(root: Path, preset: str) -> Path:
    from senformer_cli.data.synthetic import write_synthetic

    out = root / SYNTH_PRESET[preset]
    if not (out / "human" / "statistics.json").is_file():
        write_synthetic(out, SYNTH_PRESET[preset], seed=0,
                        splits={"train": 16, "valid": 2, "test": 1}, records_per_file=8)
    return out


def train_config(preset: str, variant: str, batch_size: int, steps: int, data: Path):
    from senformer_cli.config import TrainConfig

    genome = data / "human" / "genome.fa"
    return TrainConfig(steps=steps, batch_size=batch_size, warmup_steps=1, learning_rate=1e-4,
                       data={"human": str(data / "human")},
                       genomes={"human": str(genome)} if genome.is_file() else {},
                       eval_every=10**9, eval_sequences=1, eval_batch_size=1,
                       checkpoint_every=10**9, log_every=1, **VARIANTS[variant])


def loop_seconds(preset: str, variant: str, batch_size: int, steps: int, warmup: int, data: Path,
                 out: Path) -> list[float]:
    """Seconds of each timed step of a `senformer train` run (the progress callback's clock)."""
    from senformer_cli.config import ModelConfig
    from senformer_cli.training import RunPlan, run_plan

    train = train_config(preset, variant, batch_size, warmup + steps, data)
    plan = RunPlan(run_dir=out, preset=preset, model_config=ModelConfig.from_preset(preset),
                   train_config=train, resume=False, notices=[], new_heads=[])
    stamps: list[float] = []

    def progress(state):
        if state.get("phase") == "train":
            stamps.append(time.perf_counter())

    run_plan(plan, progress=progress)
    # stamps[i] follows step i + 1; steps warmup + 1 .. warmup + steps are timed.
    return [b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:])]


def fixed_batch_seconds(preset: str, variant: str, batch_size: int, steps: int, warmup: int,
                        data: Path) -> list[float]:
    """Seconds of the training step on one batch held in memory."""
    import tensorflow as tf

    from senformer_cli.config import ModelConfig
    from senformer_cli.data import load_dataset
    from senformer_cli.model import build_model
    from senformer_cli.training import (Adam, _step_function, create_variables, make_strategy,
                                        trainable_variables)

    config = ModelConfig.from_preset(preset)
    train = train_config(preset, variant, batch_size, warmup + steps, data)
    batch = next(iter(load_dataset(train.data, "train", config, batch_size=batch_size, repeat=True,
                                   genomes=train.genomes, drop_remainder=True)["human"].dataset))
    strategy, _ = make_strategy("one-device")
    with strategy.scope():
        tf.random.set_seed(0)
        model = build_model(config)
        create_variables(model, strategy)
        variables = trainable_variables(model, "all", "human", [])
        optimizer = Adam(variables, train.beta1, train.beta2, train.epsilon)
    step = _step_function(strategy, model, optimizer, variables, "human", train)
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    seconds = []
    for index in range(warmup + steps):
        start = time.perf_counter()
        loss, _, _ = step(iterator, tf.constant(index, tf.int64), tf.constant(1e-4))
        float(loss)
        seconds.append(time.perf_counter() - start)
    return seconds[warmup:]


def loader_seconds(preset: str, batch_size: int, batches: int, data: Path) -> float:
    """Seconds per batch of the training input pipeline alone (after its first batch)."""
    from senformer_cli.config import ModelConfig
    from senformer_cli.data import load_dataset

    config = ModelConfig.from_preset(preset)
    train = train_config(preset, "fp32", batch_size, 1, data)
    iterator = iter(load_dataset(train.data, "train", config, batch_size=batch_size, seed=0,
                                 repeat=True, reverse_complement=True, max_shift=3,
                                 genomes=train.genomes, drop_remainder=True)["human"].dataset)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return (time.perf_counter() - start) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"], choices=SYNTH_PRESET)
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16"], choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing)")
    parser.add_argument("--batch-size", nargs="+",
                        default=[f"{k}={v}" for k, v in BATCH_SIZES.items()],
                        help="PRESET=B per preset")
    parser.add_argument("--work", type=Path, help="keep the synthetic data here (default: temp)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    batch_sizes = {k: int(v) for k, v in (item.split("=") for item in args.batch_size)}

    rows = []
    with tempfile.TemporaryDirectory(prefix="senformer-bench-train-") as tmp:
        work = args.work or Path(tmp)
        for preset in args.presets:
            data = write_data(work, preset)
            batch = batch_sizes.get(preset, 1)
            loader = loader_seconds(preset, batch, max(args.steps, 8), data)
            for variant in args.variants:
                fixed = statistics.median(fixed_batch_seconds(preset, variant, batch, args.steps,
                                                              args.warmup, data))
                loop = statistics.median(loop_seconds(preset, variant, batch, args.steps,
                                                      args.warmup, data,
                                                      Path(tmp) / f"run-{preset}-{variant}"))
                rows.append({"preset": preset, "variant": variant, "batch_size": batch,
                             "loop_step_s": loop, "loop_steps_per_s": 1 / loop,
                             "fixed_step_s": fixed, "loader_batch_s": loader,
                             "loader_alone_share": loader / loop,
                             "loader_overlapped_share": (loop - fixed) / loop})
                if not args.json:
                    print(f"{preset} {variant}: loop {loop:.3f} s/step, fixed batch {fixed:.3f}, "
                          f"loader {loader * 1e3:.1f} ms/batch", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("\n| preset | variant | batch | steps/s | s/step (loop) | s/step (fixed batch) | "
          "loader ms/batch | loader alone / step | (loop - fixed) / loop |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['variant']} | {r['batch_size']} | {r['loop_steps_per_s']:.2f} "
              f"| {r['loop_step_s']:.3f} | {r['fixed_step_s']:.3f} | {r['loader_batch_s'] * 1e3:.1f} "
              f"| {r['loader_alone_share']:.1%} | {r['loader_overlapped_share']:+.1%} |")


if __name__ == "__main__":
    main()
