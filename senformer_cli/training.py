"""`senformer train`: the Enformer recipe, from scratch or from other weights, resumable exactly.

The recipe (DESIGN.md §7): Poisson loss (mean over batch, bins and tracks of ŷ − y·log ŷ), Adam
with a linear warm-up to the learning rate then constant, gradients clipped by their global norm,
human and mouse batches alternating step by step, reverse-complement and ±3 bp shift augmentation
(done by THE loader, `senformer_cli.data.load_dataset`).

One compiled step per head (static shapes: `drop_remainder=True`) runs under a `tf.distribute`
strategy; the global batch is split across replicas, gradients are summed across them before
clipping, and the model's `CrossReplicaBatchNorm` synchronises batch statistics.

Everything random is a pure function of (seed, step): the data pipeline's draws are saved with the
tf.data iterator in each checkpoint, and dropout masks are stateless, seeded by
`fold_in(fold_in(seed, step), micro-batch)` (and the replica), so a resumed run replays the
interrupted one to the bit.

A run directory (contract 3 of the project notes):

    RUN/config.json                {"model": ModelConfig, "train": TrainConfig, "preset": name}
    RUN/checkpoints/ckpt-N         model, optimizer, step, best metric, data iterators (keep-N)
    RUN/checkpoints/best/ckpt-N    model and step of the best validation mean r (max_to_keep=1)
    RUN/metrics.csv                step, loss, learning_rate, grad_norm, steps_per_s, valid_r_*
    RUN/logs/                      TensorBoard events
"""
from __future__ import annotations

import contextlib
import csv
import functools
import json
import math
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from senformer_cli.config import PRESETS, ModelConfig, TrainConfig
from senformer_cli.errors import SenformerError
from senformer_cli.fileio import write_json, write_text
from senformer_cli.precision import mixed_precision, slow_bf16_notice

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
CHECKPOINTS = "checkpoints"
BEST = "best"
LOGS = "logs"
# Training settings that may change when a run is resumed; the others fix the run's trajectory.
RESUMABLE_CHANGES = ("steps", "eval_every", "eval_sequences", "eval_batch_size",
                     "checkpoint_every", "keep", "log_every")
POISSON_EPSILON = 1e-7  # ŷ + ε inside the log: a softplus output may be exactly zero


# ==================================================================== run directory and configs
def default_run_dir(preset: str, config: ModelConfig, root: Path = Path("runs")) -> Path:
    """`runs/<preset>`, or `runs/<preset>-<attention>` when `config.attention` differs from the
    preset's own (so `runs/tiny` is the tiny S-Enformer and `runs/tiny-full` the tiny Enformer)."""
    own = PRESETS.get(preset, {}).get("attention", ModelConfig.attention)
    if preset in PRESETS and config.attention != own:
        return Path(root) / f"{preset}-{config.attention}"
    return Path(root) / preset


@dataclass
class TrainRequest:
    """What the user asked for (the CLI's options, unparsed beyond `--set`)."""

    data: Sequence[str] = ()  # "DIR" (head = directory name) or "HEAD=DIR"
    genomes: Sequence[str] = ()  # "HEAD=FASTA"
    out: Path | None = None
    preset: str | None = None
    config_file: Path | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    # TrainConfig fields given explicitly (options and --set train.key=value).
    train_overrides: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    overwrite: bool = False
    runs_root: Path = Path("runs")

    def model_choice_conflict(self) -> str | None:
        """A message when more than one of --preset, --config and --init-from is given."""
        given = [name for name, value in (("--preset", self.preset),
                                           ("--config", self.config_file),
                                           ("--init-from", self.train_overrides.get("init_from")))
                 if value]
        if len(given) > 1:
            return f"{' and '.join(given)} each choose the model; give one"
        return None


@dataclass
class RunPlan:
    """Everything decided before anything is written."""

    run_dir: Path
    preset: str
    model_config: ModelConfig
    train_config: TrainConfig
    resume: bool
    notices: list[str]
    new_heads: list[str]  # heads created fresh for the data (trainable whatever --trainable says)
    initial: Any = None  # the LoadedModel of --init-from (its weights are copied in)


@dataclass
class TrainResult:
    """What a training run did."""

    run_dir: Path
    preset: str
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    start_step: int
    step: int  # steps done when the run returned
    status: str  # "completed" | "interrupted" | "non-finite"
    message: str
    steps_per_s: float | None  # after warm-up (tracing excluded)
    best: dict[str, Any] | None  # {"step", "valid_mean_r", "heads": {head: {type: r, "all": r}}}
    final: dict[str, Any] | None  # the last validation, same layout
    latest_checkpoint: str | None
    best_checkpoint: str | None
    notices: list[str]
    strategy: str = "one-device"
    replicas: int = 1

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["run_dir"] = str(self.run_dir)
        return out


def _pairs(items: Sequence[str], what: str, option: str) -> dict[str, str]:
    """Parse `HEAD=VALUE` strings."""
    out = {}
    for item in items:
        head, sep, value = item.partition("=")
        if not sep or not head or not value:
            raise SenformerError(f"{option} '{item}': expected HEAD={what}")
        out[head.strip()] = value.strip()
    return out


def _data_dirs(items: Sequence[str], heads: Sequence[str]) -> dict[str, str]:
    """`--data DIR` / `--data HEAD=DIR` -> {head: DIR}; the head of a bare DIR is its name."""
    out: dict[str, str] = {}
    for item in items:
        head, sep, path = item.partition("=")
        if sep and head and path and not Path(item).exists():
            out[head.strip()] = path.strip()
            continue
        name = Path(item).name
        if name not in heads:
            raise SenformerError(f"--data {item}: the directory name is not a head of the model "
                                 f"({', '.join(heads)}); name it with --data HEAD={item}")
        out[name] = item
    return out


def _read_run_config(run_dir: Path) -> tuple[ModelConfig, TrainConfig, str]:
    path = run_dir / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SenformerError(f"{run_dir}: not a run directory (no {CONFIG_FILE}); --resume "
                             "continues a run that `senformer train` started") from None
    except json.JSONDecodeError as error:
        raise SenformerError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(data, dict) or not {"model", "train"} <= set(data):
        raise SenformerError(f"{path}: expected {{\"model\": ..., \"train\": ..., \"preset\": ...}}")
    model = ModelConfig.from_dict(data["model"], source=str(path))
    train = TrainConfig.from_dict(data["train"], source=str(path))
    return model, train, str(data.get("preset") or run_dir.name)


def _merge_train(base: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """Apply overrides; `data` / `genomes` entries are merged into the existing mappings."""
    changes = dict(overrides)
    for name in ("data", "genomes"):
        if name in changes and isinstance(changes[name], dict):
            changes[name] = {**getattr(base, name), **changes[name]}
    return base.replace(**changes)


def plan_run(request: TrainRequest, *, ensure_data: Callable[[], Path] | None = None) -> RunPlan:
    """Decide the run directory and both configs, checking everything that can be checked before
    writing anything (SenformerError names the first problem)."""
    notices: list[str] = []
    if request.resume and request.overwrite:
        raise SenformerError("--resume and --overwrite contradict each other; give one")
    if request.model_choice_conflict():
        raise SenformerError(request.model_choice_conflict())
    if request.resume:
        return _plan_resume(request, notices)

    overrides = dict(request.train_overrides)
    init_from = overrides.get("init_from")
    data_given = bool(request.data) or bool(overrides.get("data"))
    # The model.
    if init_from:
        preset = _spec_name(init_from)
        config = None  # from the spec, below
    elif request.config_file is not None:
        preset = request.preset or Path(request.config_file).stem
        config = ModelConfig.load(request.config_file).replace(**request.model_overrides)
    else:
        preset = request.preset or ("s-enformer" if data_given else "tiny")
        config = ModelConfig.from_preset(preset, **request.model_overrides)
    train = TrainConfig.for_preset(preset if preset in PRESETS else None)
    # The data: given, or the built-in synthetic set.
    genomes = _pairs(request.genomes, "FASTA", "--genome")
    if not data_given:
        from senformer_cli.data.synthetic import ensure_synthetic

        root = (ensure_data or ensure_synthetic)()
        data = {"human": str(root / "human"), "mouse": str(root / "mouse")}
        genomes = {"human": str(root / "human.fa"), "mouse": str(root / "mouse.fa"), **genomes}
        notices.append(f"no --data: training the {preset} model on the built-in synthetic data "
                       f"set in {root} (`senformer data synth`)")
    else:
        heads = list(config.heads) if config is not None else ["human", "mouse"]
        data = _data_dirs(request.data, heads)
    train = _merge_train(train, {**overrides, "data": {**data, **overrides.get("data", {})},
                                 "genomes": {**genomes, **overrides.get("genomes", {})}})
    for head, fasta in train.genomes.items():
        if not Path(fasta).is_file():
            raise SenformerError(f"--genome {head}={fasta}: no such file")
    initial = None
    if config is None:
        from senformer_cli.model.load import load_model

        # Loaded as saved; --set changes (e.g. attention=sparse on Enformer weights: the S-Enformer
        # recipe) apply to the model built here, and copy_weights moves every variable that both
        # have (the sparse model's random-block tables keep their seeded values).
        initial = load_model(train.init_from)
        config = ModelConfig.from_dict({**initial.config.to_dict(), **request.model_overrides},
                                       source="--set")
        notices.append(f"initial weights: {initial.description}")
    config, new_heads = _heads_for_data(config, train.data, notices, from_weights=bool(init_from))
    run_dir = Path(request.out) if request.out is not None else default_run_dir(
        preset, config, request.runs_root)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not request.overwrite:
            raise SenformerError(f"{run_dir} already exists: add --resume to continue that run or "
                                 "--overwrite to start it again")
    return RunPlan(run_dir, preset, config, train, False, notices, new_heads, initial)


def _plan_resume(request: TrainRequest, notices: list[str]) -> RunPlan:
    if request.out is not None:
        run_dir = Path(request.out)
    else:
        preset = request.preset or ("tiny" if not request.data else "s-enformer")
        run_dir = default_run_dir(preset, ModelConfig.from_preset(
            preset, **request.model_overrides), request.runs_root)
    if not run_dir.is_dir():
        raise SenformerError(f"--resume: {run_dir} is not a run directory (it does not exist)")
    config, train, preset = _read_run_config(run_dir)
    if not (run_dir / CHECKPOINTS / "checkpoint").is_file():
        raise SenformerError(f"--resume: {run_dir} has no checkpoint yet "
                             f"({run_dir / CHECKPOINTS}/checkpoint missing); start it again with "
                             "--overwrite")
    if request.model_overrides or request.config_file is not None:
        changed = config.replace(**request.model_overrides)
        if request.config_file is not None:
            changed = ModelConfig.load(request.config_file).replace(**request.model_overrides)
        if changed != config:
            raise SenformerError(f"--resume: the model of {run_dir} is fixed by its "
                                 f"{CONFIG_FILE}; drop --set/--config model changes")
    overrides = dict(request.train_overrides)
    if request.data:
        overrides["data"] = _data_dirs(request.data, list(config.heads))
    if request.genomes:
        overrides["genomes"] = _pairs(request.genomes, "FASTA", "--genome")
    for name, value in overrides.items():
        if name in RESUMABLE_CHANGES:
            continue
        if name in ("data", "genomes"):
            value = {**getattr(train, name), **value}
        if value != getattr(train, name):
            raise SenformerError(f"--resume: '{name}' is {getattr(train, name)!r} in "
                                 f"{run_dir / CONFIG_FILE}; a resumed run keeps it (only "
                                 f"{', '.join(RESUMABLE_CHANGES)} may change)")
    train = train.replace(**{k: v for k, v in overrides.items() if k in RESUMABLE_CHANGES})
    return RunPlan(run_dir, preset, config, train, True, notices, [])


def _spec_name(spec: str) -> str:
    """A run-directory name for a model spec: its last path component, sanitised."""
    name = Path(spec.rstrip("/")).name or "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def _heads_for_data(config: ModelConfig, data: Mapping[str, str], notices: list[str],
                    from_weights: bool) -> tuple[ModelConfig, list[str]]:
    """Give every data head as many tracks as its data directory has (a fresh head where the
    model's differs or is missing); the trunk is kept."""
    from senformer_cli.data.basenji import read_statistics

    heads = dict(config.heads)
    new_heads = []
    for head, data_dir in data.items():
        tracks = read_statistics(data_dir).num_targets
        if heads.get(head) == tracks:
            continue
        before = heads.get(head)
        heads[head] = tracks
        new_heads.append(head)
        what = (f"the model has no '{head}' head" if before is None
                else f"the model's '{head}' head has {before}")
        kept = "; the trunk's weights are kept" if from_weights else ""
        notices.append(f"new '{head}' head with {tracks} tracks for {data_dir} ({what}){kept}")
    return (config.replace(heads=heads) if new_heads else config), new_heads


# ==================================================================== distribution
def _replica_local_creator(next_creator, **kwargs):
    """Variables live on every replica and are updated there, by all-reduced gradients (as in
    Sonnet's Replicator); this lets batch norm update its moving averages inside replicas."""
    import tensorflow as tf

    if kwargs["synchronization"] == tf.VariableSynchronization.AUTO:
        kwargs["synchronization"] = tf.VariableSynchronization.ON_READ
        if kwargs["aggregation"] == tf.VariableAggregation.NONE:
            kwargs["aggregation"] = tf.VariableAggregation.ONLY_FIRST_REPLICA
        if kwargs["trainable"] is None:
            kwargs["trainable"] = True
    return next_creator(**kwargs)


def make_strategy(name: str):
    """The tf.distribute strategy for `--strategy NAME` (and the name `auto` resolved to).

    one-device: the default strategy (the first GPU if any, else the CPU); mirrored: every local
    GPU, or every logical CPU device when there is no GPU; multi-worker: MultiWorkerMirroredStrategy
    configured by TF_CONFIG; tpu: the TPU found by TPUClusterResolver. auto: multi-worker when
    TF_CONFIG is set, mirrored with two or more GPUs, else one-device.
    """
    import sonnet as snt
    import tensorflow as tf

    if name == "auto":
        if os.environ.get("TF_CONFIG"):
            name = "multi-worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "one-device"
    if name == "one-device":
        return tf.distribute.get_strategy(), name
    if name == "mirrored":
        devices = ([d.name for d in tf.config.list_logical_devices("GPU")]
                   or [d.name for d in tf.config.list_logical_devices("CPU")])
        if len(devices) < 2:
            raise SenformerError(f"--strategy mirrored needs at least two devices; this machine "
                                 f"has one ({devices[0] if devices else 'none'}): use "
                                 "--strategy one-device")
        return snt.distribute.Replicator(devices=devices), name
    if name == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise SenformerError("--strategy multi-worker needs the TF_CONFIG environment variable "
                                 "(cluster and task of this worker)")

        class MultiWorkerReplicator(tf.distribute.MultiWorkerMirroredStrategy):
            @contextlib.contextmanager
            def scope(self):
                with super().scope(), tf.variable_creator_scope(_replica_local_creator):
                    yield

        try:
            return MultiWorkerReplicator(), name
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            raise SenformerError(f"--strategy multi-worker: {error}") from None
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            raise SenformerError(f"--strategy tpu: no TPU found ({str(error).splitlines()[0]})"
                                 ) from None
        return snt.distribute.TpuReplicator(resolver), name
    raise SenformerError(f"unknown strategy '{name}'")


# ==================================================================== the recipe's pieces
def poisson_loss(targets, predictions):
    """Mean over batch, bins and tracks of ŷ − y·log(ŷ + ε), in float32."""
    import tensorflow as tf

    predictions = tf.cast(predictions, tf.float32)
    targets = tf.cast(targets, tf.float32)
    return tf.reduce_mean(predictions - targets * tf.math.log(predictions + POISSON_EPSILON))


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up from lr / W at step 0 to lr at step W - 1, then constant (0-based steps)."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    return config.learning_rate


class Adam:
    """Adam (Kingma & Ba, Algorithm 1, as in Sonnet's) with slots for a fixed list of variables.

    The step count `t` is passed in (the run's step + 1), so the optimizer state is just m and v.
    Works in any replica context: every replica applies the same all-reduced update to its copy.
    """

    def __init__(self, variables: Sequence, beta1: float, beta2: float, epsilon: float):
        import tensorflow as tf

        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self._index = {v.ref(): i for i, v in enumerate(variables)}
        with tf.name_scope("adam"):
            self.m = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                                  name=_slot_name(v, "m")) for v in variables]
            self.v = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                                  name=_slot_name(v, "v")) for v in variables]

    def trackable(self):
        import tensorflow as tf

        return tf.train.Checkpoint(m=self.m, v=self.v)

    def apply(self, gradients: Sequence, variables: Sequence, learning_rate, t) -> None:
        """variable -= lr m̂ / (sqrt(v̂) + ε), m̂ = m / (1 - β1^t), v̂ = v / (1 - β2^t).

        One fused `ResourceApplyAdam` op per variable (TensorFlow's own kernel) instead of about
        fifteen element-wise ops: a smaller graph, traced about 1 s faster for `tiny`. The kernel
        computes lr sqrt(1 - β2^t) / (1 - β1^t) m / (sqrt(v) + ε'), the same update when
        ε' = ε sqrt(1 - β2^t). Each replica updates its own copies (replica-local variables).
        """
        import tensorflow as tf

        learning_rate = tf.cast(learning_rate, tf.float32)
        t = tf.cast(t, tf.float32)
        first_power, second_power = tf.pow(self.beta1, t), tf.pow(self.beta2, t)
        epsilon = self.epsilon * tf.sqrt(1.0 - second_power)
        beta1, beta2 = tf.constant(self.beta1), tf.constant(self.beta2)
        for gradient, variable in zip(gradients, variables):
            i = self._index[variable.ref()]
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=self.m[i].handle, v=self.v[i].handle,
                beta1_power=first_power, beta2_power=second_power, lr=learning_rate,
                beta1=beta1, beta2=beta2, epsilon=epsilon, grad=gradient)


def clipped_update(optimizer: Adam, gradients: Sequence, variables: Sequence, loss,
                   clip_norm: float, learning_rate, t):
    """Clip `gradients` to global norm `clip_norm` and apply them, only when the loss and the norm
    are finite; returns (norm, finite). The update sits in a tf.cond on `finite`, so none of its
    ops (not even β1 m and β2 v, which read only the slots) runs before every gradient exists:
    run early, they would hold two more copies of the weights through the backward pass."""
    import tensorflow as tf

    norm = tf.linalg.global_norm(gradients)
    finite = tf.logical_and(tf.math.is_finite(loss), tf.math.is_finite(norm))
    clipped, _ = tf.clip_by_global_norm(gradients, clip_norm, use_norm=norm)

    def update():
        optimizer.apply(clipped, variables, learning_rate, t)
        return tf.constant(True)

    tf.cond(finite, update, lambda: tf.constant(False))
    return norm, finite


def _slot_name(variable, slot: str) -> str:
    return variable.name.split(":")[0].replace("/", "_") + f"_{slot}"


def _relative_name(variable) -> str:
    """`enformer_3/trunk/stem/conv1_d/w:0` -> `trunk/stem/conv1_d/w` (the model's instance number
    and the output index dropped), to match variables of two instances."""
    name = variable.name.split(":")[0]
    return name.split("/", 1)[1] if "/" in name else name


def trainable_variables(model, trainable: str, head: str, new_heads: Sequence[str]) -> list:
    """The variables one step on `head` updates.

    all: the trunk and the head; heads: the head; attention: each transformer block's attention
    (q/k/v/r_k/output projections, r_w_bias, r_r_bias) and the LayerNorm before it. A head created
    fresh for the data is always trained.
    """
    head_variables = list(model.heads[head].trainable_variables)
    if trainable == "all":
        chosen = list(model.trunk.trainable_variables) + head_variables
    elif trainable == "heads":
        chosen = head_variables
    elif trainable == "attention":
        chosen = [v for v in model.trunk.trainable_variables if "/mha/" in v.name]
        if head in new_heads:
            chosen += head_variables
    else:
        raise SenformerError(f"unknown --trainable '{trainable}'")
    return chosen


def forward(model, inputs, head: str, trainable: str, seed):
    """Training-mode predictions of one head: [B, target_length, tracks].

    Parts that are frozen run in inference mode (batch norm uses its moving averages): with
    `heads` the whole trunk, with `attention` everything but the transformer.
    """
    if trainable == "heads":
        embedding = model.embedding(inputs, is_training=False)
    else:  # through the model's recompute and tiling, like any other call
        embedding = model.embedding(inputs, is_training=True, seed=seed,
                                    train_only_transformer=trainable == "attention")
    return model.heads[head](embedding, is_training=True)


def create_variables(model, strategy=None) -> None:
    """Create the model's variables: small models by one eager call on zeros (seconds), larger
    ones by tracing a call without autograph (nothing is computed). Under a tf.distribute
    `strategy` (inside its scope) the call runs in its replica context (eagerly): batch norm
    across replicas cannot be called outside one."""
    import tensorflow as tf

    config = model.config
    zeros = tf.zeros([1, config.sequence_length, 4])
    if strategy is not None and tf.distribute.in_cross_replica_context():
        strategy.run(lambda: model(zeros, is_training=False))
    elif config.channels * config.sequence_length <= 96 * 65_536:
        model(zeros, is_training=False)
    else:
        spec = tf.TensorSpec([1, config.sequence_length, 4], tf.float32)
        tf.function(lambda x: model(x, is_training=False), autograph=False
                    ).get_concrete_function(spec)


def variables_by_path(model) -> dict[str, Any]:
    """Every variable of a module keyed by its attribute path (`_trunk/_layers/0/...`).

    Not by name: Sonnet gives a conv block's two moving averages the same variable names
    (`exponential_moving_average/average`), while their paths differ (`moving_mean`,
    `moving_variance`). Two models of the same architecture have the same paths.
    """
    import tensorflow as tf

    pairs = model._flatten(predicate=lambda v: isinstance(v, tf.Variable), with_path=True)
    return {"/".join(str(part) for part in path): variable for path, variable in pairs}


def copy_weights(source, target, skip_heads: Sequence[str] = ()) -> list[str]:
    """Assign `source`'s variables to `target`'s at the same attribute path.

    Heads in `skip_heads` keep their fresh initialisation; target variables the source lacks (e.g.
    the random-block tables when sparse attention replaces full) keep theirs. Returns the paths of
    target variables that were not copied. A shape mismatch is a SenformerError naming the
    variable and both shapes.
    """
    sources = variables_by_path(source)
    untouched = []
    for path, variable in variables_by_path(target).items():
        if any(path.startswith(f"_heads/{h}/") for h in skip_heads) or path not in sources:
            untouched.append(path)
            continue
        value = sources[path]
        if tuple(value.shape) != tuple(variable.shape):
            raise SenformerError(f"--init-from: variable {_relative_name(variable)} has shape "
                                 f"{tuple(value.shape)} in the initial model but "
                                 f"{tuple(variable.shape)} here")
        variable.assign(value)
    return untouched


def track_means(data_dir: str, head: str, config: ModelConfig, records: int = 64) -> np.ndarray:
    """Each track's mean target over the first `records` records of the train split (file order,
    no augmentation): [tracks], float64. The targets do not depend on the input's flanks, so no
    genome is read (they are N)."""
    from senformer_cli.data import load_dataset

    loaded = load_dataset({head: data_dir}, "train", config, batch_size=8, shuffle=False)
    total, count = 0.0, 0
    for _, targets in loaded[head].dataset.take(-(-records // 8)):
        values = targets.numpy().astype(np.float64)
        total = total + values.sum(axis=(0, 1))
        count += values.shape[0] * values.shape[1]
    if not count:
        raise SenformerError(f"{data_dir}: the train split holds no records")
    return total / count


def initialise_heads_at_mean(model, means: Mapping[str, np.ndarray]) -> None:
    """Start each head of `means` at the best constant prediction: the linear's weights 0 and its
    bias softplus^-1(track mean), so the output is the mean everywhere. Training then grows the
    weights along the trunk features that explain the targets, instead of first shrinking random
    weights whose noise the Poisson loss punishes (which also shrinks the trunk's gradient)."""
    for head, mean in means.items():
        linear = model.heads[head].layers[0]
        mean = np.maximum(np.asarray(mean, np.float64), 1e-4)
        linear.w.assign(np.zeros(linear.w.shape, np.float32))
        linear.b.assign(np.log(np.expm1(mean)).astype(np.float32))  # softplus^-1


# ==================================================================== validation
@dataclass
class Validation:
    """Mean Pearson r per track type (and "all") of every head on the valid split."""

    heads: dict[str, dict[str, float]]

    @property
    def mean_r(self) -> float:
        values = [h["all"] for h in self.heads.values() if not math.isnan(h.get("all", math.nan))]
        return float(np.mean(values)) if values else math.nan

    def to_dict(self, step: int) -> dict[str, Any]:
        return {"step": step, "valid_mean_r": self.mean_r, "heads": self.heads}


def validate(model, config: ModelConfig, train: TrainConfig, evaluate: Callable | None = None
             ) -> Validation:
    """Mean r per track type of each trained head on its valid split (up to `eval_sequences`),
    with the evaluate command's metric (`senformer_cli.evaluation.evaluate_model`, which keeps
    one compiled inference function per model, so validations after the first do not retrace)."""
    from senformer_cli.data.targets import TRACK_TYPES

    if evaluate is None:
        from senformer_cli.evaluation import evaluate_model as evaluate
    heads = {}
    for head, data_dir in train.data.items():
        result = evaluate(model, config, Path(data_dir), split="valid", head=head,
                          genome=train.genomes.get(head), max_sequences=train.eval_sequences,
                          batch_size=train.eval_batch_size)
        summary = result.summary
        values = {}
        for kind in (*TRACK_TYPES, "all"):
            entry = summary.get(kind)
            if isinstance(entry, Mapping) and entry.get("mean_r") is not None:
                values[kind] = float(entry["mean_r"])
        heads[head] = values
    return Validation(heads)


# ==================================================================== metrics.csv, TensorBoard
def metric_columns(heads: Sequence[str]) -> list[str]:
    from senformer_cli.data.targets import TRACK_TYPES

    valid = [f"valid_r_{head}_{kind}" for head in heads for kind in (*TRACK_TYPES, "all")]
    return ["step", "loss", "learning_rate", "grad_norm", "steps_per_s", *valid, "valid_mean_r"]


class _MetricsLog:
    """Appends rows to RUN/metrics.csv (flushed each row) and scalars to RUN/logs/."""

    def __init__(self, run_dir: Path, heads: Sequence[str], resume_step: int | None):
        import tensorflow as tf

        self.path = run_dir / METRICS_FILE
        self.columns = metric_columns(heads)
        if resume_step is not None and self.path.is_file():
            # Rows past the restored checkpoint are replayed, so they are dropped first.
            with self.path.open(newline="") as handle:
                rows = [row for row in csv.DictReader(handle)
                        if row.get("step", "").isdigit() and int(row["step"]) <= resume_step]
            write_text(self.path, self._render(rows))
        elif not self.path.is_file():
            write_text(self.path, self._render([]))
        self._writer = tf.summary.create_file_writer(str(run_dir / LOGS))

    def _render(self, rows: list[dict]) -> str:
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def write(self, row: dict[str, Any]) -> None:
        import tensorflow as tf

        cells = {k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else
                     (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()}
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, self.columns, extrasaction="ignore",
                           lineterminator="\n").writerow(cells)
            handle.flush()
        with self._writer.as_default():
            for key, value in row.items():
                if key != "step" and isinstance(value, float) and not math.isnan(value):
                    # tf.summary.write with the scalars plugin's metadata: what
                    # tf.summary.scalar writes, without needing the tensorboard package.
                    tf.summary.write(key.replace("valid_r_", "valid/"),
                                     tf.constant(value, tf.float32), step=row["step"],
                                     metadata=_scalar_metadata())
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _scalar_metadata():
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR)


def validation_row(validation: Validation) -> dict[str, Any]:
    row: dict[str, Any] = {"valid_mean_r": validation.mean_r}
    for head, values in validation.heads.items():
        for kind, value in values.items():
            row[f"valid_r_{head}_{kind}"] = value
    return row


# ==================================================================== signals
@contextlib.contextmanager
def _stop_on_signals() -> Iterator[dict[str, Any]]:
    """While inside: SIGINT/SIGTERM set `state["signal"]` (the loop then saves and returns); a
    second one raises KeyboardInterrupt at once. Handlers are restored on exit."""
    state: dict[str, Any] = {"signal": None}
    previous = {}

    def handler(signum, frame):
        if state["signal"] is not None:
            raise KeyboardInterrupt
        state["signal"] = signal.Signals(signum).name

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: no handlers, the caller stops us otherwise
        pass
    try:
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ==================================================================== the run
def train(request: TrainRequest, *, progress: Callable[[dict[str, Any]], None] | None = None,
          notify: Callable[[str], None] | None = None,
          ensure_data: Callable[[], Path] | None = None,
          evaluate: Callable | None = None) -> TrainResult:
    """`senformer train`: plan the run (nothing written on a user error), then train it.

    progress(state) is called after every step and before validations with a dict: phase
    ("train" | "validate"), step, steps, start, and after a step head, loss, learning_rate,
    steps_per_s. notify(line) gets the
    one-line notices (synthetic data, new heads, initial weights, resumed step).
    """
    plan = plan_run(request, ensure_data=ensure_data)
    return run_plan(plan, progress=progress, notify=notify, evaluate=evaluate)


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def run_plan(plan: RunPlan, *, progress: Callable[[dict[str, Any]], None] | None = None,
             notify: Callable[[str], None] | None = None,
             evaluate: Callable | None = None) -> TrainResult:
    """Train `plan` (see the module docstring for what is written where)."""
    import tempfile

    import tensorflow as tf

    from senformer_cli.data import load_dataset
    from senformer_cli.data.basenji import split_files
    from senformer_cli.model import build_model

    progress = progress or (lambda state: None)
    notify = notify or (lambda line: None)
    for line in plan.notices:
        notify(line)
    config, train = plan.model_config, plan.train_config
    strategy, strategy_name = make_strategy(train.strategy)
    if train.precision == "bf16":
        notice = slow_bf16_notice(len(tf.config.list_logical_devices("GPU"))
                                  + len(tf.config.list_logical_devices("TPU")))
        if notice:
            notify(notice)
    replicas = strategy.num_replicas_in_sync
    if train.batch_size % replicas:
        raise SenformerError(f"--batch-size {train.batch_size} does not split evenly across the "
                             f"{replicas} replicas of --strategy {strategy_name}")
    heads = list(train.data)
    if not heads:
        raise SenformerError("no training data: give --data DIR")
    # Sonnet's initialisers draw from TensorFlow's global generator, and tf.data's seeded shuffles
    # combine their seed with the global one: seeding it first makes the initial weights and the
    # data order functions of --seed alone, whatever ran before in this process.
    tf.random.set_seed(train.seed)
    for head, data_dir in train.data.items():
        split_files(data_dir, "valid")  # validation needs the valid split: fail before training
    data = load_dataset(train.data, "train", config, batch_size=train.batch_size, seed=train.seed,
                        repeat=True, reverse_complement=train.reverse_complement,
                        max_shift=train.max_shift, genomes=train.genomes, drop_remainder=True,
                        shuffle_buffer=train.shuffle_buffer)

    with strategy.scope():
        model = build_model(config)
        create_variables(model, strategy)
        if plan.initial is not None:
            copy_weights(plan.initial.model, model, skip_heads=plan.new_heads)
        fresh = heads if plan.initial is None else [h for h in heads if h in plan.new_heads]
        if train.head_init == "mean" and fresh and not plan.resume:
            initialise_heads_at_mean(model, {
                head: track_means(train.data[head], head, config)
                for head in fresh})
        per_head = {head: trainable_variables(model, train.trainable, head, plan.new_heads)
                    for head in heads}
        chosen = {v.ref() for variables in per_head.values() for v in variables}
        optimized = [v for v in model.trainable_variables if v.ref() in chosen]
        optimizer = Adam(optimized, train.beta1, train.beta2, train.epsilon)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    best_value = tf.Variable(-np.inf, dtype=tf.float64, trainable=False, name="best_valid_mean_r")
    # Plain tf.data iterators of global batches (checkpointable, unlike distributed iterators);
    # the step function hands each replica its slice of the global batch.
    iterators = {head: iter(data[head].dataset) for head in heads}
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer.trackable(), step=step,
                                     best_valid_mean_r=best_value,
                                     data=tf.train.Checkpoint(**iterators))

    # The run directory: written from here on, after every check above.
    run_dir, chief = plan.run_dir, _is_chief(strategy)
    write_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="senformer-worker-"))
    if not plan.resume and chief:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        write_json(run_dir / CONFIG_FILE, {"model": config.to_dict(), "train": train.to_dict(),
                                           "preset": plan.preset})
    manager = tf.train.CheckpointManager(checkpoint, write_dir / CHECKPOINTS, max_to_keep=train.keep,
                                         checkpoint_name="ckpt")
    best_manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, step=step),
                                              write_dir / CHECKPOINTS / BEST, max_to_keep=1,
                                              checkpoint_name="ckpt")
    if plan.resume:
        latest = tf.train.latest_checkpoint(run_dir / CHECKPOINTS)
        if latest is None:
            raise SenformerError(f"--resume: {run_dir / CHECKPOINTS} holds no checkpoint")
        try:
            checkpoint.restore(latest).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            raise SenformerError(f"--resume: {latest} does not match this run's model "
                                 f"({str(error).splitlines()[0]})") from None
        notify(f"resumed {run_dir} at step {int(step.numpy())} from {latest}")
    start = int(step.numpy())
    log = _MetricsLog(run_dir, heads, start if plan.resume else None) if chief else None

    step_functions = {head: _step_function(strategy, model, optimizer, per_head[head], head, train)
                      for head in heads}

    status, message = "completed", ""
    durations: list[float] = []
    window: dict[str, list[float]] = {"loss": [], "grad_norm": [], "seconds": []}
    warmed: set[str] = set()
    done = start
    with data.user_errors(), _stop_on_signals() as signals:
        for index in range(start, train.steps):
            head = heads[index % len(heads)]
            learning_rate = learning_rate_at(index, train)
            began = time.perf_counter()
            loss, norm, finite = step_functions[head](
                iterators[head], tf.constant(index, tf.int64), tf.constant(learning_rate, tf.float32))
            loss, norm, finite = float(loss), float(norm), bool(finite)
            seconds = time.perf_counter() - began
            if not finite:
                what = "loss" if not math.isfinite(loss) else "gradient norm"
                latest = manager.latest_checkpoint
                status = "non-finite"
                message = (f"non-finite {what} at step {index + 1} ({head} batch); stopped without "
                           f"updating the weights. The run keeps its last good checkpoint "
                           f"({latest or 'none yet'}). Try a lower --learning-rate or "
                           "--clip-norm, or --precision fp32.")
                break
            if head in warmed:  # a head's first step traces and compiles: not in the rate
                durations.append(seconds)
                window["seconds"].append(seconds)
            warmed.add(head)
            done = index + 1
            step.assign(done)
            window["loss"].append(loss)
            window["grad_norm"].append(norm)
            rate = len(durations) / sum(durations) if durations else None
            progress({"phase": "train", "step": done, "steps": train.steps, "start": start,
                      "head": head, "loss": loss, "learning_rate": learning_rate, "steps_per_s": rate})
            row: dict[str, Any] = {}
            if done % train.log_every == 0:
                secs = window["seconds"]
                row.update(loss=float(np.mean(window["loss"])), learning_rate=learning_rate,
                           grad_norm=float(np.mean(window["grad_norm"])),
                           steps_per_s=len(secs) / sum(secs) if secs else math.nan)
                window = {"loss": [], "grad_norm": [], "seconds": []}
            if done % train.eval_every == 0 or done == train.steps:
                progress({"phase": "validate", "step": done, "steps": train.steps, "start": start})
                validation = validate(model, config, train, evaluate)
                row.update(validation_row(validation))
                if validation.mean_r > float(best_value.numpy()):
                    best_value.assign(validation.mean_r)
                    best_manager.save(checkpoint_number=done)
            if row and log is not None:
                log.write({"step": done, **row})
            if (done % train.checkpoint_every == 0 or done == train.steps
                    or signals["signal"] is not None):
                manager.save(checkpoint_number=done)
            if signals["signal"] is not None:
                status = "interrupted"
                message = (f"{signals['signal']}: stopped at step {done}, saved "
                           f"{manager.latest_checkpoint}; continue with --resume")
                break
    if log is not None:
        log.close()
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)
    if status == "completed" and start >= train.steps:
        message = f"{run_dir} is already at step {start} of {train.steps}; nothing to do"
    best, final = summaries_from_metrics(run_dir / METRICS_FILE, heads)
    return TrainResult(
        run_dir=run_dir, preset=plan.preset, model_config=config.to_dict(),
        train_config=train.to_dict(), start_step=start, step=done, status=status, message=message,
        steps_per_s=len(durations) / sum(durations) if durations else None, best=best, final=final,
        latest_checkpoint=manager.latest_checkpoint if chief else None,
        best_checkpoint=best_manager.latest_checkpoint if chief else None, notices=plan.notices,
        strategy=strategy_name, replicas=replicas)


def _step_function(strategy, model, optimizer: Adam, variables: list, head: str,
                   train: TrainConfig):
    """The compiled training step of one head: `step(iterator, step_index, learning_rate) ->
    (loss, gradient global norm, finite)`, reading `train.accumulate` micro-batches."""
    import tensorflow as tf

    fold_in = tf.random.experimental.stateless_fold_in
    base_seed = tf.constant([train.seed, 0], tf.int64)
    micro_batches = train.accumulate
    compute_dtype = tf.bfloat16 if train.precision == "bf16" else tf.float32

    def replica_step(batches, step_index, learning_rate):
        context = tf.distribute.get_replica_context()
        scale = 1.0 / (context.num_replicas_in_sync * micro_batches)
        seed = fold_in(fold_in(base_seed, step_index), context.replica_id_in_sync_group)
        total, total_loss = None, tf.constant(0.0)
        for k, (inputs, targets) in enumerate(batches):
            # One micro-batch after the other (not all at once: memory).
            with tf.control_dependencies([] if total is None else [total[0]]):
                with tf.GradientTape() as tape:
                    with mixed_precision(train.precision):  # bf16: bfloat16 compute
                        predictions = forward(model, tf.cast(inputs, compute_dtype), head,
                                              train.trainable, fold_in(seed, k))
                    loss = poisson_loss(targets, tf.cast(predictions, tf.float32)) * scale
                gradients = tape.gradient(loss, variables)
            gradients = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                         for g, v in zip(gradients, variables)]
            total = gradients if total is None else [a + b for a, b in zip(total, gradients)]
            total_loss += loss
        # Sum over replicas of (local mean / replicas): the gradient of the global batch's mean.
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, total)
        total_loss = context.all_reduce(tf.distribute.ReduceOp.SUM, total_loss)
        norm, finite = clipped_update(optimizer, total, variables, total_loss, train.clip_norm,
                                      learning_rate, step_index + 1)
        return total_loss, norm, finite

    if train.jit_compile:
        replica_step = tf.function(replica_step, jit_compile=True, autograph=False)

    # No autograph: the model's loops are explicit tf.while_loops, and converting every Sonnet
    # module makes tracing several times slower.
    replicas = strategy.num_replicas_in_sync
    per_replica = train.batch_size // replicas

    def replica_slice(context, batch):
        """Replica i's examples of a global batch: rows i*b .. (i+1)*b - 1."""
        start = context.replica_id_in_sync_group * per_replica
        return tuple(t[start:start + per_replica] for t in batch)

    @functools.partial(tf.function, autograph=False)
    def step(iterator, step_index, learning_rate):
        batches = [next(iterator) for _ in range(micro_batches)]
        if replicas > 1:  # every worker reads the same global batches and keeps its replicas'
            batches = [strategy.experimental_distribute_values_from_function(
                functools.partial(replica_slice, batch=batch)) for batch in batches]
        results = strategy.run(replica_step, args=(batches, step_index, learning_rate))
        return tuple(strategy.experimental_local_results(r)[0] for r in results)

    return step


def summaries_from_metrics(path: Path, heads: Sequence[str]
                           ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(best, final) validations recorded in RUN/metrics.csv: each {"step", "valid_mean_r",
    "heads": {head: {track type: r, "all": r}}}, or None when there is none."""
    import pandas as pd

    from senformer_cli.data.targets import TRACK_TYPES

    if not path.is_file():
        return None, None
    table = pd.read_csv(path)
    if "valid_mean_r" not in table or table["valid_mean_r"].notna().sum() == 0:
        return None, None
    rows = table[table["valid_mean_r"].notna()]

    def entry(row) -> dict[str, Any]:
        out = {"step": int(row["step"]), "valid_mean_r": float(row["valid_mean_r"]), "heads": {}}
        for head in heads:
            values = {kind: float(row[f"valid_r_{head}_{kind}"]) for kind in (*TRACK_TYPES, "all")
                      if f"valid_r_{head}_{kind}" in row and pd.notna(row[f"valid_r_{head}_{kind}"])}
            out["heads"][head] = values
        return out

    return entry(rows.loc[rows["valid_mean_r"].idxmax()]), entry(rows.iloc[-1])
