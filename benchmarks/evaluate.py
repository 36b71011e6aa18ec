"""`senformer evaluate`'s overhead: sequences/s against a bare forward pass, and peak memory
against the split size.

    .venv/bin/python benchmarks/evaluate.py [--presets tiny small] [--sequences 32]
                                            [--batch-size 1] [--memory-sequences 8]
                                            [--repeats 2] [--out DIR] [--json]

For each model preset (untrained, seeded weights: speed does not depend on the weights):

- **Speed.** Writes synthetic data of the preset's shapes (`tiny`: 24,576-bp records extended to
  32,768 bp with FASTA flanks, 16 tracks; `small`: 131,072-bp records, 5,313 tracks) with
  `--sequences` test records. Times `evaluate_model` over the split (loader, forward pass,
  per-track/per-sequence metrics and bookkeeping; traced once beforehand) and a bare forward pass
  of the same model, traced the same way, over the same batches held in memory. Best of
  `--repeats` each, alternating. The goal: evaluate at least 0.9x the bare rate. Evaluate's
  fixed start-up (the loader's set-up: tf.data tracing, targets sheet, FASTA index; about a
  second) is shown apart, with the ratio over the rest of the split: on a real test split
  (1,937 records) the start-up is negligible.
- **Memory.** Peak resident memory (VmHWM) of a fresh process that evaluates a split of N and
  one of 4N records (N = `--memory-sequences`). The goal: no growth with the split size.

Prints a table of the ratios; `--json` prints the numbers instead.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SYNTH_PRESET = {"tiny": "tiny", "small": "small", "enformer": "full", "s-enformer": "full"}


def write_data(root: Path, preset: str, test_records: int) -> Path:
    """Synthetic data of the preset's shapes with `test_records` test records (kept if present)."""
    from senformer_cli.data.synthetic import write_synthetic

    out = root / f"{SYNTH_PRESET[preset]}-test{test_records}"
    if not (out / "human" / "statistics.json").is_file():
        write_synthetic(out, SYNTH_PRESET[preset], seed=0,
                        splits={"train": 1, "valid": 0, "test": test_records}, records_per_file=8)
    return out


def peak_rss_bytes() -> int:
    """VmHWM of this process (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def bare_forward_rate(model, config, batches: list, head: str = "human") -> float:
    """Sequences/s of `model` on batches already in memory: the same traced signature as
    evaluate's, outputs brought to numpy (as evaluate does), nothing else."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, config.sequence_length, 4], tf.float32)
    predict = tf.function(lambda x: model(x, is_training=False)[head], input_signature=[spec])
    predict(batches[0]).numpy()  # trace and warm up
    count = sum(int(batch.shape[0]) for batch in batches)
    start = time.perf_counter()
    for batch in batches:
        predict(batch).numpy()
    return count / (time.perf_counter() - start)


def evaluate_seconds(model, config, data: Path, batch_size: int,
                     max_sequences: int | None = None) -> tuple[int, float]:
    """(sequences, seconds) of a whole `evaluate_model` call (the predictor is traced and warm
    already)."""
    from senformer_cli.evaluation import evaluate_model

    start = time.perf_counter()
    result = evaluate_model(model, config, data / "human", genome=_genome(data, config),
                            batch_size=batch_size, max_sequences=max_sequences)
    return result.summary["num_sequences"], time.perf_counter() - start


def _genome(data: Path, config) -> Path | None:
    return data / "human.fa" if config.sequence_length > _record_length(data) else None


def _record_length(data: Path) -> int:
    return json.loads((data / "human" / "statistics.json").read_text())["seq_length"]


def measure_speed(preset: str, data: Path, batch_size: int, repeats: int) -> dict:
    from senformer_cli.data import load_dataset
    from senformer_cli.evaluation import evaluate_model
    from senformer_cli.model.load import load_model

    loaded = load_model(preset)
    model, config = loaded.model, loaded.config
    # Warm up evaluate's traced predictor (cached per model) on one batch.
    evaluate_model(model, config, data / "human", genome=_genome(data, config),
                   batch_size=batch_size, max_sequences=batch_size)
    genomes = {"human": _genome(data, config)} if _genome(data, config) else None
    batches = [sequence for sequence, _ in load_dataset(
        data / "human", "test", config, batch_size=batch_size, genomes=genomes)["human"]]
    bare, whole, first = [], [], []
    for _ in range(repeats):
        bare.append(bare_forward_rate(model, config, batches))
        whole.append(evaluate_seconds(model, config, data, batch_size))
        first.append(evaluate_seconds(model, config, data, batch_size, batch_size)[1])
    count = whole[0][0]
    bare_rate = max(bare)
    evaluate_rate = count / min(seconds for _, seconds in whole)
    # Start-up: a one-batch evaluation minus one bare batch (loader set-up: tf.data tracing,
    # targets sheet, FASTA index). After it, the per-sequence rate of the rest of the split.
    startup = max(min(first) - batch_size / bare_rate, 0.0)
    steady_rate = (count - batch_size) / max(min(s for _, s in whole) - min(first), 1e-9)
    return {"preset": preset, "sequences": count, "batch_size": batch_size,
            "bare_sequences_per_second": bare_rate, "evaluate_sequences_per_second": evaluate_rate,
            "ratio": evaluate_rate / bare_rate, "startup_seconds": startup,
            "steady_sequences_per_second": steady_rate, "steady_ratio": steady_rate / bare_rate,
            "all_bare": bare, "all_evaluate_seconds": [s for _, s in whole],
            "all_first_batch_seconds": first}


def measure_memory(preset: str, data: Path, batch_size: int) -> int:
    """Peak resident bytes of a fresh process that loads the model and evaluates `data`."""
    command = [sys.executable, __file__, "--child-memory", preset, str(data), str(batch_size)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed: {done.stderr.strip()[-2000:]}")
    return int(json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_bytes"])


def child_memory(preset: str, data: Path, batch_size: int) -> None:
    from senformer_cli.evaluation import evaluate_model
    from senformer_cli.model.load import load_model

    loaded = load_model(preset)
    result = evaluate_model(loaded.model, loaded.config, data / "human",
                            genome=_genome(data, loaded.config), batch_size=batch_size)
    print(json.dumps({"sequences": result.summary["num_sequences"],
                      "peak_rss_bytes": peak_rss_bytes()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"],
                        choices=sorted(SYNTH_PRESET))
    parser.add_argument("--sequences", type=int, default=32, help="test records timed")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--memory-sequences", type=int, default=8,
                        help="N: peak memory is measured for splits of N and 4N records")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/senformer-bench-evaluate"),
                        help="where the synthetic data are written (kept for re-runs)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child-memory", nargs=3, metavar=("PRESET", "DATA", "BATCH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.child_memory:
        preset, data, batch = args.child_memory
        child_memory(preset, Path(data), int(batch))
        return

    rows = []
    for preset in args.presets:
        speed = measure_speed(preset, write_data(args.out, preset, args.sequences),
                              args.batch_size, args.repeats)
        row = dict(speed)
        if not args.skip_memory:
            n = args.memory_sequences
            small = measure_memory(preset, write_data(args.out, preset, n), args.batch_size)
            large = measure_memory(preset, write_data(args.out, preset, 4 * n), args.batch_size)
            row.update(memory_sequences=n, peak_rss_n_bytes=small, peak_rss_4n_bytes=large,
                       memory_growth=large / small - 1)
        rows.append(row)
        if not args.json:
            print(f"{preset}: done", file=sys.stderr)

    if args.json:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"evaluate vs a bare forward pass (batch {args.batch_size}, best of "
                  f"{args.repeats}; goal >= 0.9x); peak memory of a fresh process at N and 4N "
                  "records (goal: no growth)", title_justify="left")
    for column in ("preset", "seqs", "bare seq/s", "evaluate seq/s", "ratio", "start-up s",
                   "ratio after start-up", "peak GB (N)", "peak GB (4N)", "growth"):
        table.add_column(column, justify="left" if column == "preset" else "right")
    for row in rows:
        memory = ["-", "-", "-"]
        if "memory_growth" in row:
            memory = [f"{row['peak_rss_n_bytes'] / 1e9:.2f} ({row['memory_sequences']})",
                      f"{row['peak_rss_4n_bytes'] / 1e9:.2f} ({4 * row['memory_sequences']})",
                      f"{100 * row['memory_growth']:+.1f}%"]
        table.add_row(row["preset"], str(row["sequences"]),
                      f"{row['bare_sequences_per_second']:.2f}",
                      f"{row['evaluate_sequences_per_second']:.2f}", f"{row['ratio']:.2f}x",
                      f"{row['startup_seconds']:.2f}", f"{row['steady_ratio']:.2f}x", *memory)
    Console(width=max(Console().width, 120)).print(table)


if __name__ == "__main__":
    main()
