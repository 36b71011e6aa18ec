"""One attention layer at the published width, full vs BigBird sparse: time per step and peak memory.

    python benchmarks/attention.py                      # T = 1,536, 3,072, 6,144, 12,288 tokens
    python benchmarks/attention.py --tokens 1536 --json

Layer: 1,536 channels, 8 heads, key size 64, value size 192, 192 relative-position features
(`MultiheadAttention` vs `SparseMultiheadAttention` with blocks of 64, 3 random blocks, a window of
3 blocks and 1 global block at each end). One step = forward + backward (gradients with respect to
the input and every variable), batch 1, compiled with `tf.function`, `is_training=False` so dropout
adds no randomness (the published rates are 5% / 1%, a small share of the time).

Each (attention, tokens) runs in a fresh process (`--worker full 1536`): time per step is the median
over N steps after two warm-up steps (N adaptive, so each run takes about `--seconds`); peak
memory is the process's VmHWM at the end minus its VmRSS after imports, input and layer creation
(before any variable or step). Full attention is skipped as "out of memory" when its estimated
footprint exceeds the memory available, and reported so when the process runs out or is killed.

The FLOP ceiling is the whole layer's floating-point operations (projections q, k, v, r_k and
output, plus the attention matmuls including the relative-position term) full / sparse: the
speed-up an implementation could reach if time followed FLOPs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHANNELS, NUM_HEADS, KEY_SIZE, VALUE_SIZE, POSITION_FEATURES = 1536, 8, 64, 192, 192
BLOCK_SIZE, NUM_RANDOM_BLOCKS, WINDOW_BLOCKS, NUM_GLOBAL_BLOCKS = 64, 3, 3, 1
DEFAULT_TOKENS = (1536, 3072, 6144, 12288)
# Full attention holds about this many [H, T, T] float32 tensors at its peak (forward + backward:
# content, relative (2T-1 wide), summed and softmaxed logits, and their gradients); measured here:
# 8.7 at 6,144 tokens (DESIGN.md §4: 11.1 GB peak, 0.54 GB baseline).
FULL_LOGIT_COPIES = 9.0


# ----------------------------------------------------------------------------- arithmetic
def layer_flops(num_tokens: int, attention: str) -> float:
    """Floating-point operations of one forward pass of the layer (a multiply-add counts 2).

    The backward pass repeats every matmul about twice, so the full / sparse ratio is the same.
    """
    t, c, h, k, v, f = num_tokens, CHANNELS, NUM_HEADS, KEY_SIZE, VALUE_SIZE, POSITION_FEATURES
    projections = 2 * t * c * h * (k + k + v) + 2 * t * h * v * c  # q, k, v and output
    projections += 2 * (2 * t - 1) * f * h * k  # r_k of every relative distance
    if attention == "full":
        pairs = t * t
        relative = 2 * h * k * t * (2 * t - 1)
    else:
        b, g, w, r = BLOCK_SIZE, NUM_GLOBAL_BLOCKS, WINDOW_BLOCKS, NUM_RANDOM_BLOCKS
        n = t // b
        middle_rows = n - 2 * g
        # Computed slots, masked ones included: global rows see all T keys, every middle query
        # block w + 2g + r key blocks.
        pairs = 2 * g * b * t + middle_rows * b * (w + 2 * g + r) * b
        relative = 2 * h * k * (
            2 * g * b * (t + g * b - 1)  # global rows: one skewed product per end
            + middle_rows * b * ((w + 1) * b - 1)  # window: one shared positional window per row
            + middle_rows * (2 * g + r) * b * (2 * b - 1))  # global and random key blocks: frames
    return projections + 2 * h * k * pairs + 2 * h * v * pairs + relative


def flop_ceiling(num_tokens: int) -> float:
    return layer_flops(num_tokens, "full") / layer_flops(num_tokens, "sparse")


def full_attention_estimate_bytes(num_tokens: int) -> float:
    return FULL_LOGIT_COPIES * NUM_HEADS * num_tokens**2 * 4


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


# ----------------------------------------------------------------------------- worker (one process)
def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_worker(attention: str, num_tokens: int, max_steps: int, seconds: float) -> dict[str, Any]:
    """Build one layer, time forward + backward; returns the measurements."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from senformer_cli.model.attention import MultiheadAttention

    kwargs = dict(value_size=VALUE_SIZE, key_size=KEY_SIZE, num_heads=NUM_HEADS,
                  num_relative_position_features=POSITION_FEATURES)
    if attention == "full":
        layer = MultiheadAttention(**kwargs)
    else:
        from senformer_cli.model.sparse_attention import SparseMultiheadAttention

        layer = SparseMultiheadAttention(
            **kwargs, block_size=BLOCK_SIZE, num_random_blocks=NUM_RANDOM_BLOCKS,
            window_blocks=WINDOW_BLOCKS, num_global_blocks=NUM_GLOBAL_BLOCKS,
            num_tokens=num_tokens, seed=(0, 0))
    inputs = tf.random.stateless_normal([1, num_tokens, CHANNELS], seed=(1, 2))
    upstream = tf.random.stateless_normal([1, num_tokens, CHANNELS], seed=(3, 4))
    baseline = _proc_status_bytes("VmRSS")

    @tf.function
    def step(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, is_training=False) * upstream)
        gradients = tape.gradient(loss, [x] + list(layer.trainable_variables))
        return tf.add_n([tf.reduce_sum(g) for g in gradients])  # depends on every gradient

    try:
        start = time.perf_counter()
        step(inputs).numpy()  # trace, create variables
        first = time.perf_counter() - start
        start = time.perf_counter()
        step(inputs).numpy()
        warm = time.perf_counter() - start
        num_steps = max(3, min(max_steps, int(seconds / max(warm, 1e-3))))
        times = []
        for _ in range(num_steps):
            start = time.perf_counter()
            step(inputs).numpy()
            times.append(time.perf_counter() - start)
    except tf.errors.ResourceExhaustedError:
        return {"attention": attention, "tokens": num_tokens, "status": "out of memory"}
    peak = _proc_status_bytes("VmHWM")
    return {"attention": attention, "tokens": num_tokens, "status": "ok",
            "seconds_per_step": statistics.median(times), "steps": num_steps,
            "first_step_seconds": first, "baseline_bytes": baseline, "peak_bytes": peak,
            "peak_bytes_above_baseline": peak - baseline}


# ----------------------------------------------------------------------------- driver
def run_in_subprocess(attention: str, num_tokens: int, max_steps: int, seconds: float,
                      timeout: float) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", attention, str(num_tokens),
               "--steps", str(max_steps), "--seconds", str(seconds)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"attention": attention, "tokens": num_tokens, "status": f"timed out after {timeout:.0f} s"}
    if done.returncode in (-9, 137):
        return {"attention": attention, "tokens": num_tokens, "status": "out of memory (killed)"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        if "ResourceExhausted" in done.stderr or "MemoryError" in done.stderr:
            return {"attention": attention, "tokens": num_tokens, "status": "out of memory"}
        return {"attention": attention, "tokens": num_tokens,
                "status": f"failed (exit {done.returncode}): {tail}"}
    return json.loads(lines[-1])


def benchmark(tokens: list[int], max_steps: int, seconds: float, timeout: float) -> list[dict[str, Any]]:
    rows = []
    for num_tokens in tokens:
        row: dict[str, Any] = {"tokens": num_tokens, "flop_ceiling": flop_ceiling(num_tokens)}
        estimate = full_attention_estimate_bytes(num_tokens)
        if estimate > 0.9 * available_bytes():
            row["full"] = {"attention": "full", "tokens": num_tokens, "status": "out of memory",
                           "reason": f"needs about {estimate / 2**30:.0f} GiB, "
                                     f"{available_bytes() / 2**30:.0f} GiB available"}
        else:
            row["full"] = run_in_subprocess("full", num_tokens, max_steps, seconds, timeout)
        row["sparse"] = run_in_subprocess("sparse", num_tokens, max_steps, seconds, timeout)
        full, sparse = row["full"], row["sparse"]
        if full["status"] == sparse["status"] == "ok":
            row["speedup"] = full["seconds_per_step"] / sparse["seconds_per_step"]
            row["memory_ratio"] = full["peak_bytes_above_baseline"] / sparse["peak_bytes_above_baseline"]
        rows.append(row)
    return rows


def render(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    def seconds(result: dict[str, Any]) -> str:
        return f"{result['seconds_per_step']:.3f}" if result["status"] == "ok" else result["status"]

    def gigabytes(result: dict[str, Any]) -> str:
        return f"{result['peak_bytes_above_baseline'] / 1e9:.2f}" if result["status"] == "ok" else "-"

    def ratio(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:.2f}x" if key in row else "-"

    table = Table(title="one attention layer, 1,536 channels, 8 heads, batch 1, forward + backward "
                        "(is_training=False); peak memory above the process baseline",
                  title_justify="left")
    for column in ("tokens", "full s/step", "full peak GB", "sparse s/step", "sparse peak GB",
                   "speed-up", "FLOP ceiling", "memory ratio"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(f"{row['tokens']:,}", seconds(row["full"]), gigabytes(row["full"]),
                      seconds(row["sparse"]), gigabytes(row["sparse"]), ratio(row, "speedup"),
                      f"{row['flop_ceiling']:.2f}x", ratio(row, "memory_ratio"))
    console = Console()
    console.print(table)
    console.print(f"{os.cpu_count()} CPU cores, {available_bytes() / 2**30:.1f} GiB available; "
                  "median of N steps after 2 warm-up steps, each configuration in a fresh process.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=list(DEFAULT_TOKENS),
                        help="sequence lengths in tokens (multiples of 64)")
    parser.add_argument("--steps", type=int, default=20, help="at most this many timed steps")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="aim for about this many seconds of timed steps per configuration")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per configuration")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    parser.add_argument("--worker", nargs=2, metavar=("ATTENTION", "TOKENS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        attention, num_tokens = args.worker[0], int(args.worker[1])
        print(json.dumps(run_worker(attention, num_tokens, args.steps, args.seconds)))
        return
    bad = [t for t in args.tokens if t % BLOCK_SIZE or t < (2 * NUM_GLOBAL_BLOCKS + 1) * BLOCK_SIZE]
    if bad:
        parser.error(f"--tokens {bad[0]}: must be a multiple of {BLOCK_SIZE} with at least "
                     f"{2 * NUM_GLOBAL_BLOCKS + 1} blocks")
    rows = benchmark(args.tokens, args.steps, args.seconds, args.timeout)
    if args.json:
        print(json.dumps({"machine": {"cpu_count": os.cpu_count()}, "rows": rows}, indent=2))
    else:
        render(rows)


if __name__ == "__main__":
    main()
