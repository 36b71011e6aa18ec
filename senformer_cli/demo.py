"""`senformer demo`: the whole S-Enformer study on the built-in synthetic data, in one command.

Each step is the library call of its subcommand (there is no second implementation):

    data              data.synthetic.ensure_synthetic      senformer data synth
    train-enformer    training (plan_run, run_plan)         senformer train --set attention=full
    train-s-enformer  training (plan_run, run_plan)         senformer train
    evaluate-*        evaluation.evaluate(RUN, ...)         senformer evaluate
    compare           evaluation.compare_results + write    senformer compare --results
    profile           profiling, behind `profile_models`    senformer profile
    receptive-field   receptive_field + write_outputs       senformer receptive-field

Both models are the `tiny` width with the same seed, recipe and budget; only the attention
differs (full: Enformer, `OUT/runs/tiny-full`; BigBird block-sparse: S-Enformer, `OUT/runs/tiny`).

OUT is resumable. `OUT/demo.json` records each finished step with a fingerprint of what it was
computed from; a second run with the same settings reuses every step whose output is there and
whose inputs have not changed (an interrupted training run is resumed from its last checkpoint),
and says so per step. The report (`report.md`, `report.html`, `summary.json`, `tables/`,
`figures/`) is written last, from the steps' outputs.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from senformer_cli import host
from senformer_cli.errors import SenformerError
from senformer_cli.fileio import write_json

DEFAULT_OUT = Path("demo-out")
STATE_FILE = "demo.json"
STATE_VERSION = 1
PRESET = "tiny"
HEAD = "human"  # the organism evaluated, compared and measured
# (display name, key used in file names, attention); A = Enformer, B = S-Enformer.
MODELS = (("Enformer", "enformer", "full"), ("S-Enformer", "s-enformer", "sparse"))
STEPS = ("data", "train-enformer", "train-s-enformer", "evaluate-enformer", "evaluate-s-enformer",
         "compare", "profile", "receptive-field")
STEP_LABELS = {
    "data": "synthetic data (senformer data synth)",
    "train-enformer": "train Enformer (senformer train --set attention=full)",
    "train-s-enformer": "train S-Enformer (senformer train)",
    "evaluate-enformer": "evaluate Enformer (senformer evaluate)",
    "evaluate-s-enformer": "evaluate S-Enformer (senformer evaluate)",
    "compare": "compare (senformer compare)",
    "profile": "memory and time (senformer profile)",
    "receptive-field": "receptive field (senformer receptive-field)",
}
# What each step is computed from: a step is recomputed when one of these changed.
DEPENDS = {
    "evaluate-enformer": ("train-enformer",),
    "evaluate-s-enformer": ("train-s-enformer",),
    "compare": ("evaluate-enformer", "evaluate-s-enformer"),
    "receptive-field": ("train-enformer", "train-s-enformer"),
}

Events = Callable[[dict[str, Any]], None]
Progress = Callable[[str, float, "float | None"], None]


# ==================================================================== settings
@dataclass(frozen=True)
class DemoPlan:
    """Everything the demo's numbers depend on (a resumed demo must have the same plan)."""

    quick: bool
    seed: int
    sequence_length: int  # model input (bp); the synthetic records are 24,576 bp
    organisms: tuple[str, ...]  # trained on (batches alternate)
    train: dict[str, Any]  # TrainConfig fields over the tiny recipe
    test_sequences: int | None  # None: the whole test split
    eval_batch_size: int
    profile_lengths: tuple[int, ...]
    profile_component: str  # "attention" (one layer) or "model"
    profile_steps: int
    profile_warmup: int
    profile_max_memory: str | None
    rf_positions: int
    rf_repeats: int
    rf_batch_size: int

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["organisms"] = list(self.organisms)
        data["profile_lengths"] = list(self.profile_lengths)
        return data


def plan_for(quick: bool = False, seed: int = 0) -> DemoPlan:
    """The demo's budget. Default: about 10 minutes on 2 quiet CPU cores; quick: a smoke run.

    Both train the tiny width at a 16,384-bp input (the synthetic records' centre: 128 bins, the
    whole input) on the human data only (the head evaluated, compared and measured), with the
    tiny recipe of `senformer train` (learning rate, warm-up, clipping, batch) and a shorter
    budget. Default: 300 steps, the whole 32-record test split. Quick: 8 steps of batch 2: every
    step runs, and the numbers mean little.

    The profile measures one attention layer of the tiny width (forward and backward) at input
    lengths up to 1 Mb, under a memory limit low enough that full attention's quadratic memory
    stops fitting while sparse attention's linear memory does not; whole-model rows at the
    tiny width are dominated by the convolutions (`senformer profile` measures those).
    """
    if seed < 0:
        raise SenformerError(f"--seed {seed}: must be a non-negative integer")
    if quick:
        return DemoPlan(
            quick=True, seed=seed, sequence_length=16_384, organisms=("human",),
            train={"steps": 8, "batch_size": 2, "warmup_steps": 4, "eval_every": 8,
                   "eval_sequences": 4, "eval_batch_size": 4, "checkpoint_every": 8,
                   "log_every": 2, "seed": seed},
            test_sequences=8, eval_batch_size=4,
            profile_lengths=(16_384, 1_048_576), profile_component="attention",
            profile_steps=1, profile_warmup=1, profile_max_memory="1GB",
            rf_positions=3, rf_repeats=4, rf_batch_size=4)
    return DemoPlan(
        quick=False, seed=seed, sequence_length=16_384, organisms=("human",),
        train={"steps": 300, "eval_every": 60, "eval_sequences": 16, "checkpoint_every": 60,
               "log_every": 10, "seed": seed},
        test_sequences=None, eval_batch_size=4,
        profile_lengths=(32_768, 131_072, 524_288, 1_048_576), profile_component="attention",
        profile_steps=2, profile_warmup=1, profile_max_memory="2GB",
        rf_positions=9, rf_repeats=8, rf_batch_size=4)


# ==================================================================== results
@dataclass
class StepOutcome:
    name: str
    label: str
    status: str  # "made" | "reused" | "resumed" | "skipped" | "interrupted" | "failed"
    seconds: float
    detail: str
    output: str | None = None
    seconds_when_made: float | None = None  # what the step cost when it was computed


@dataclass
class DemoResult:
    out: Path
    plan: DemoPlan
    status: str  # "completed" | "interrupted" | "failed"
    message: str
    seconds: float
    steps: list[StepOutcome]
    summary: dict[str, Any] = field(default_factory=dict)  # what summary.json holds

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "status": self.status, "message": self.message,
                "seconds": self.seconds, "plan": self.plan.to_dict(),
                "steps": [asdict(s) for s in self.steps], **self.summary}


class _Stop(Exception):
    """A training run stopped early (signal or non-finite loss): the demo stops after saving."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class ProfileUnavailable(Exception):
    """`senformer profile` (issue 9) is not part of this build yet."""


# ==================================================================== the state file
class _State:
    """OUT/demo.json: the plan and, per finished step, when, its fingerprint and its inputs'."""

    def __init__(self, out: Path, plan: DemoPlan):
        self.path = out / STATE_FILE
        self.data: dict[str, Any] = {"version": STATE_VERSION, "plan": plan.to_dict(), "steps": {}}
        if self.path.is_file():
            saved = json.loads(self.path.read_text())
            self.data["steps"] = dict(saved.get("steps", {}))

    def record(self, name: str) -> dict[str, Any] | None:
        return self.data["steps"].get(name)

    def fingerprint(self, name: str) -> str | None:
        entry = self.record(name)
        return entry.get("fingerprint") if entry else None

    def done(self, name: str, fingerprint: str, seconds: float, output: str | None) -> None:
        self.data["steps"][name] = {
            "fingerprint": fingerprint, "seconds": round(seconds, 2), "output": output,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "inputs": {dep: self.fingerprint(dep) for dep in DEPENDS.get(name, ())}}
        self.save()

    def forget(self, name: str) -> None:
        if self.data["steps"].pop(name, None) is not None:
            self.save()

    def reusable(self, name: str, output: Path) -> bool:
        """Finished earlier, its output is there, and its inputs are the ones it used."""
        entry = self.record(name)
        if not entry or not output.exists():
            return False
        for dep in DEPENDS.get(name, ()):
            current = self.fingerprint(dep)
            if current is None or entry.get("inputs", {}).get(dep) != current:
                return False
        return True

    def save(self) -> None:
        write_json(self.path, self.data)


def check_out(out: Path, plan: DemoPlan, overwrite: bool) -> str:
    """'new', 'resume' or 'overwrite' for OUT; SenformerError when OUT cannot be used."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SenformerError(f"--out {out}: is a file, not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return "new"
    if overwrite:
        return "overwrite"
    state = out / STATE_FILE
    if not state.is_file():
        raise SenformerError(f"--out {out}: the directory holds files that are not a demo's "
                             f"(no {STATE_FILE}); choose another --out or add --overwrite")
    try:
        saved = json.loads(state.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        raise SenformerError(f"{state}: unreadable ({error}); add --overwrite to start over"
                             ) from None
    if saved.get("version") != STATE_VERSION or saved.get("plan") != plan.to_dict():
        before = saved.get("plan") or {}
        if before.get("quick") is not None and before.get("seed") is not None:
            what = (f"{'--quick' if before['quick'] else 'the default budget'}, "
                    f"--seed {before['seed']}")
        else:
            what = "another version of the demo"
        raise SenformerError(f"--out {out}: holds a demo made with {what} (or other settings); "
                             "rerun with those options to continue it, choose another --out, or "
                             "add --overwrite to start over")
    return "resume"


# ==================================================================== the steps
def _fingerprint_run(run_dir: Path) -> str | None:
    """Changes whenever a checkpoint of the run is written (the checkpoint files' text)."""
    parts = []
    for path in (run_dir / "checkpoints" / "checkpoint",
                 run_dir / "checkpoints" / "best" / "checkpoint"):
        if path.is_file():
            parts.append(path.read_text())
    if not parts:
        return None
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def latest_checkpoint_step(run_dir: Path) -> int | None:
    """The step of RUN/checkpoints' latest checkpoint (ckpt-N is saved at step N), or None."""
    import re

    path = run_dir / "checkpoints" / "checkpoint"
    if not path.is_file():
        return None
    match = re.search(r'^model_checkpoint_path:\s*"(?:.*/)?ckpt-(\d+)"', path.read_text(), re.M)
    return int(match.group(1)) if match else None


def train_action(saved: dict[str, Any] | None, wanted: dict[str, Any], latest_step: int | None,
                 steps: int) -> str:
    """What to do with a model's run directory: "reuse" (trained to `steps` with the wanted
    model and training configs), "resume" (the same configs, an earlier checkpoint) or "train"
    (from the start, replacing whatever is there)."""
    if saved is None or latest_step is None:
        return "train"
    if any(saved.get(key) != value for key, value in wanted.items()):
        return "train"
    return "reuse" if latest_step >= steps else "resume"


def train_request(attention: str, plan: DemoPlan, data_root: Path, runs_root: Path):
    """The `senformer train` request of one model of the pair (tiny width, the plan's budget)."""
    from senformer_cli.training import TrainRequest

    return TrainRequest(
        data=[str(data_root / organism) for organism in plan.organisms],
        genomes=[f"{organism}={data_root / f'{organism}.fa'}" for organism in plan.organisms],
        preset=PRESET,
        model_overrides={"attention": attention, "sequence_length": plan.sequence_length,
                         "random_seed": plan.seed},
        train_overrides=dict(plan.train), runs_root=runs_root)


def _train_step(attention: str, plan: DemoPlan, data_root: Path, runs_root: Path,
                progress: Callable[[float, float | None], None]) -> tuple[str, str, Path]:
    """Train one model of the pair, resuming or reusing its run: (status, detail, run dir)."""
    from senformer_cli.training import plan_run, run_plan

    request = train_request(attention, plan, data_root, runs_root)
    expected = plan_run(replace(request, overwrite=True))  # checks everything, writes nothing
    run_dir = expected.run_dir
    steps = expected.train_config.steps
    wanted = {"model": expected.model_config.to_dict(), "train": expected.train_config.to_dict()}
    saved = None
    if (run_dir / "config.json").is_file():
        try:
            saved = json.loads((run_dir / "config.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            saved = None
    done = latest_checkpoint_step(run_dir)
    action = train_action(saved, wanted, done, steps)

    def on_progress(state: dict[str, Any]) -> None:
        progress(state["step"], state["steps"])

    if action == "reuse":
        return "reused", f"{run_dir}: already trained ({done} steps)", run_dir
    if action == "resume":
        resumed = plan_run(replace(request, out=run_dir, resume=True, train_overrides={}))
        result = run_plan(resumed, progress=on_progress)
        status, detail = "resumed", f"{run_dir}: resumed at step {done}, trained to {result.step}"
    else:
        result = run_plan(expected, progress=on_progress)
        status, detail = "made", f"{run_dir}: trained {result.step} steps"
    if result.status != "completed":
        raise _Stop("interrupted" if result.status == "interrupted" else "failed", result.message)
    if result.steps_per_s:
        detail += f" ({result.steps_per_s:.2f} steps/s after warm-up)"
    return status, detail, run_dir


def profile_models(out_dir: Path, plan: DemoPlan,
                   progress: Callable[[float, float | None], None]) -> dict[str, Any]:
    """`senformer profile` for the demo: peak memory and time of a training step of the tiny
    Enformer and S-Enformer (or of one attention layer of each) at the plan's input lengths, each
    in a fresh process, under the plan's memory limit. The one place the demo calls the profiler
    (issue 9); returns the profile result and writes profile.csv, profile.json and profile.png to
    `out_dir`."""
    try:
        from senformer_cli import profiling
    except ImportError:
        raise ProfileUnavailable("`senformer profile` (issue 9) is not in this build yet"
                                 ) from None
    request = profiling.make_request(
        preset=PRESET, lengths=",".join(str(length) for length in plan.profile_lengths),
        attention="full,sparse", mode="train", component=plan.profile_component,
        steps=plan.profile_steps,
        warmup=plan.profile_warmup, max_memory=plan.profile_max_memory)
    result = profiling.profile(request, progress=lambda done, total, label: progress(done, total))
    profiling.write_outputs(result, out_dir, overwrite=True)
    return result


def _evaluate_step(name: str, run_dir: Path, plan: DemoPlan, data_root: Path, out_dir: Path,
                   progress: Callable[[float, float | None], None]):
    from senformer_cli.evaluation import evaluate

    return evaluate(str(run_dir), data_root / HEAD, genome=data_root / f"{HEAD}.fa", out=out_dir,
                    overwrite=True, split="test", max_sequences=plan.test_sequences,
                    batch_size=plan.eval_batch_size,
                    progress=lambda done, total: progress(done, total))


def _receptive_field_step(runs: dict[str, Path], plan: DemoPlan, out_dir: Path,
                          progress: Callable[[float, float | None], None]):
    from senformer_cli.receptive_field import receptive_field, write_outputs

    names = [name for name, _, _ in MODELS]
    result = receptive_field([str(runs[name]) for name in names], num_positions=plan.rf_positions,
                             repeats=plan.rf_repeats, head=HEAD, seed=plan.seed,
                             batch_size=plan.rf_batch_size, shared=True,
                             # A few dozen batches: compiling each pass with XLA costs more than
                             # it saves (the subcommand's default run has 450 batches per model).
                             xla=False,
                             progress=lambda done, total: progress(done, total))
    for measurement, name in zip(result.models, names):
        measurement.name = name  # the pair's names instead of their run paths
    write_outputs(result, out_dir, overwrite=True)
    return result


# ==================================================================== the demo
def run_demo(out: Path | str = DEFAULT_OUT, *, quick: bool = False, seed: int = 0,
             overwrite: bool = False, events: Events | None = None,
             progress: Progress | None = None) -> DemoResult:
    """Run (or resume) the whole study into `out` and write its report; see the module docstring.

    events(event) gets {"event": "start" | "done", "step", "label", "index", "total"[, "status",
    "detail", "seconds"]} per step; progress(step, done, total) reports within a step.
    Raises SenformerError for a bad --out or --seed before anything is written.
    """
    from senformer_cli.paths import cache_dir

    started = time.perf_counter()
    out = Path(out)
    plan = plan_for(quick, seed)
    mode = check_out(out, plan, overwrite)
    if mode == "overwrite":
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    state = _State(out, plan)
    state.save()
    events = events or (lambda event: None)
    report_progress = progress or (lambda step, done, total: None)
    runs_root = out / "runs"
    steps_dir = out / "steps"
    outcomes: list[StepOutcome] = []
    context: dict[str, Any] = {"runs": {}}

    def run_step(index: int, name: str, body: Callable[[Callable], tuple[str, str, str | None]],
                 output: Path | None = None, reuse: Callable[[], str] | None = None) -> None:
        label = STEP_LABELS[name]
        events({"event": "start", "step": name, "label": label, "index": index,
                "total": len(STEPS)})
        began = time.perf_counter()
        if reuse is not None and output is not None and state.reusable(name, output):
            # Reused: its record (and fingerprint) stay as they are.
            status, detail, where = "reused", reuse(), str(output.parent)
        else:
            state.forget(name)
            status, detail, where = body(lambda done, total: report_progress(name, done, total))
            if where is not None:
                if name.startswith("train-"):
                    fingerprint = _fingerprint_run(Path(where)) or ""
                elif name == "data":
                    fingerprint = where
                else:  # unique per completion
                    fingerprint = f"{time.strftime('%Y%m%dT%H%M%S')}.{time.time_ns() % 10**9:09d}"
                state.done(name, fingerprint, time.perf_counter() - began, where)
        seconds = time.perf_counter() - began
        record = state.record(name)
        made = record.get("seconds") if record and status == "reused" else None
        outcome = StepOutcome(name, label, status, round(seconds, 2), detail, where,
                              made if made is not None else round(seconds, 2))
        outcomes.append(outcome)
        events({"event": "done", "step": name, "label": label, "index": index,
                "total": len(STEPS), "status": status, "detail": detail,
                "seconds": outcome.seconds})

    status, message = "completed", ""
    try:
        # 1. Data.
        def data_body(step_progress):
            from senformer_cli.data.synthetic import ensure_synthetic

            existed = (cache_dir() / f"synthetic-tiny-seed{seed}" / "ground_truth.json").is_file()
            root = ensure_synthetic(seed)
            context["data"] = root
            how = "made earlier" if existed else "written now"
            return ("reused" if existed else "made",
                    f"{display_path(root)} ({how}; shared with `senformer train`)", str(root))

        run_step(1, "data", data_body)
        data_root: Path = context["data"]

        # 2-3. Train the pair.
        for offset, (name, key, attention) in enumerate(MODELS):
            step_name = f"train-{key}"

            def train_body(step_progress, attention=attention, name=name):
                status_, detail, run_dir = _train_step(attention, plan, data_root, runs_root,
                                                       step_progress)
                context["runs"][name] = run_dir
                return status_, detail, str(run_dir)

            run_step(2 + offset, step_name, train_body)

        # 4-5. Evaluate both on the test split.
        evaluations = {}
        for offset, (name, key, _) in enumerate(MODELS):
            step_name = f"evaluate-{key}"
            folder = steps_dir / step_name

            def evaluate_body(step_progress, name=name, folder=folder):
                result = _evaluate_step(name, context["runs"][name], plan, data_root, folder,
                                        step_progress)
                evaluations[name] = result
                return "made", _accuracy_line(result.summary), str(folder)

            def evaluate_reuse(name=name, folder=folder):
                from senformer_cli.evaluation import read_evaluation

                evaluations[name] = read_evaluation(folder)
                return f"{folder} ({_accuracy_line(evaluations[name].summary)})"

            run_step(4 + offset, step_name, evaluate_body, folder / "summary.json",
                     evaluate_reuse)

        # 6. Compare (A = Enformer, B = S-Enformer, as in the report's figure).
        compare_dir = steps_dir / "compare"

        def compare_body(step_progress):
            from senformer_cli.evaluation import compare_results, write_comparison

            (name_a, _, _), (name_b, _, _) = MODELS
            result = compare_results(evaluations[name_a], evaluations[name_b], name_a=name_a,
                                     name_b=name_b)
            write_comparison(result, compare_dir, overwrite=True)
            return "made", _compare_line(result.summary), str(compare_dir)

        def compare_reuse():
            return f"{compare_dir} ({_compare_line(_read_json(compare_dir / 'compare.json'))})"

        run_step(6, "compare", compare_body, compare_dir / "compare.json", compare_reuse)

        # 7. Memory and time.
        profile_dir = steps_dir / "profile"

        def profile_body(step_progress):
            try:
                result = profile_models(profile_dir, plan, step_progress)
            except ProfileUnavailable as error:
                return "skipped", str(error), None
            return "made", _profile_line(result), str(profile_dir)

        def profile_reuse():
            return f"{profile_dir} ({_profile_line(_read_json(profile_dir / 'profile.json'))})"

        run_step(7, "profile", profile_body, profile_dir / "profile.json", profile_reuse)

        # 8. Receptive field.
        rf_dir = steps_dir / "receptive-field"

        def rf_body(step_progress):
            result = _receptive_field_step(context["runs"], plan, rf_dir, step_progress)
            return "made", _reach_line(result.summary(with_effects=False)), str(rf_dir)

        run_step(8, "receptive-field", rf_body, rf_dir / "summary.json",
                 lambda: f"{rf_dir} ({_reach_line(_read_json(rf_dir / 'summary.json'))})")
    except _Stop as stop:
        status, message = stop.status, (f"{stop.message}; run `senformer demo --out {out}"
                                        f"{' --quick' if quick else ''}"
                                        f"{f' --seed {seed}' if seed else ''}` again to continue")
    seconds = time.perf_counter() - started
    result = DemoResult(out, plan, status, message, round(seconds, 1), outcomes)
    if status == "completed":
        from senformer_cli.demo_report import write_report

        result.summary = write_report(result, data_root)
    return result


# ==================================================================== one-line descriptions
def display_path(path: Path | str) -> str:
    """`path` with the home directory written as ~ (for lines a person reads)."""
    text, home = str(path), str(Path.home())
    return "~" + text[len(home):] if home != "/" and (text == home or text.startswith(home + "/")) \
        else text


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _accuracy_line(summary: dict[str, Any]) -> str:
    return (f"test mean r {_fmt((summary.get('all') or {}).get('mean_r'))} over "
            f"{summary.get('num_sequences')} sequences")


def _compare_line(summary: dict[str, Any]) -> str:
    info = summary.get("track_types", {}).get("all", {})
    ge = info.get("percent_b_ge_a")
    return (f"r(Enformer, S-Enformer) {_fmt(info.get('r_between'))}, S-Enformer >= Enformer on "
            f"{'-' if ge is None else f'{ge:.0f}%'} of sequences")


def _profile_line(result: dict[str, Any]) -> str:
    longest = result.get("longest_fitting") or {}
    parts = [f"{model} up to {length:,} bp" if length else f"{model}: none"
             for model, length in longest.items()]
    return "longest input that fits: " + ("; ".join(parts) if parts else "-")


def _reach_line(summary: dict[str, Any]) -> str:
    parts = []
    for model in summary.get("models", []):
        far = [p.get("farthest_reached_bp") for p in model.get("positions", [])
               if p.get("farthest_reached_bp") is not None]
        parts.append(f"{model['name']} {max(far):,.0f} bp" if far else f"{model['name']} -")
    return "farthest effect of one base change: " + ", ".join(parts)


def machine() -> dict[str, Any]:
    """The machine the demo ran on, and how busy it was."""
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version()}
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    for key, value in (("cpu_model", host.cpu_model()),
                       ("memory_total_bytes", host.memory_total_bytes())):
        if value is not None:
            info[key] = value
    try:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
    except ImportError:
        pass
    return info
