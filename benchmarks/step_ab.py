"""The training step of two checkouts of this project, side by side: how README's "before against
after" figures are measured.

    git worktree add /tmp/before HEAD~1
    .venv/bin/python benchmarks/step_ab.py /tmp/before . [--preset tiny] [--variant fp32]
        [--rounds 6] [--steps 20]

Each round runs one child process per checkout, alternating (A, B, A, B, ...), so a drift of the
host's speed hits both alike. A child times `benchmarks/train.py`'s fixed-batch step of its own
checkout (one batch in memory, one device, `--variant` fp32 unless given, 2 untimed steps
first) and prints the median of `--steps` steps. The table gives every round's pair and the
ratio of the medians over the rounds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from train import BATCH_SIZES, SYNTH_PRESET, VARIANTS

CHILD = """
import json, statistics, sys
from pathlib import Path
sys.path[:0] = [{root!r}, {root!r} + "/benchmarks"]
import train
data = train.write_data(Path({work!r}), {preset!r})
seconds = train.fixed_batch_seconds({preset!r}, {variant!r}, {batch}, {steps}, 2, data)
print(json.dumps(statistics.median(seconds)))
"""


def step_seconds(root: Path, preset: str, variant: str, batch: int, steps: int,
                 work: Path) -> float:
    code = CHILD.format(root=str(root.resolve()), work=str(work), preset=preset, variant=variant,
                        batch=batch, steps=steps)
    child = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    if child.returncode:
        sys.exit(f"{root}: the step failed:\n{child.stderr[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="checkout A (e.g. a git worktree of the base)")
    parser.add_argument("b", type=Path, help="checkout B (e.g. this one)")
    parser.add_argument("--preset", default="tiny", choices=SYNTH_PRESET)
    parser.add_argument("--variant", default="fp32", choices=VARIANTS)
    parser.add_argument("--batch-size", type=int, help="default: train.py's (tiny 4, small 1)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per child")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    batch = args.batch_size or BATCH_SIZES[args.preset]

    pairs = []
    with tempfile.TemporaryDirectory(prefix="senformer-step-ab-") as tmp:
        for _ in range(args.rounds):
            pairs.append([step_seconds(root, args.preset, args.variant, batch, args.steps,
                                       Path(tmp) / name)
                          for name, root in (("a", args.a), ("b", args.b))])
            if not args.json:
                print(f"A {pairs[-1][0]:.3f} s  B {pairs[-1][1]:.3f} s", flush=True)
    median_a = statistics.median(a for a, _ in pairs)
    median_b = statistics.median(b for _, b in pairs)
    if args.json:
        print(json.dumps({"a": str(args.a), "b": str(args.b), "preset": args.preset,
                          "variant": args.variant,
                          "batch_size": batch, "pairs": pairs, "median_a": median_a,
                          "median_b": median_b, "a_over_b": median_a / median_b}, indent=2))
        return
    print(f"\n{args.preset}, batch {batch}, {args.variant}, one batch in memory, {args.rounds} "
          f"rounds of alternating processes\n")
    print("| round | A (s) | B (s) | A / B |")
    print("|---|---|---|---|")
    for index, (a, b) in enumerate(pairs, 1):
        print(f"| {index} | {a:.3f} | {b:.3f} | {a / b:.3f} |")
    print(f"| median | {median_a:.3f} | {median_b:.3f} | {median_a / median_b:.3f} |")


if __name__ == "__main__":
    main()
