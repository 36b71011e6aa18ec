"""What the bare commands choose, so that they tell one story on a fresh machine.

- `senformer compare` with no models compares the pair `senformer train` makes on the synthetic
  data, `runs/tiny-full` (Enformer, full attention) against `runs/tiny` (S-Enformer, sparse),
  training whichever is missing first through the same `training.train` call as
  `senformer train [--set attention=full]`.
- `senformer evaluate --model enformer-pretrained` without the published weights or the data says
  where it looked and what to download (`pretrained_inputs_missing`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from senformer_cli.errors import SenformerError

RUNS_ROOT = Path("runs")
PAIR = (("Enformer", "full"), ("S-Enformer", "sparse"))  # A, B
PRESET = "tiny"


@dataclass
class DefaultPair:
    """The bare `compare`'s choice: model specs A and B, the data and genome they are scored on,
    and which runs were trained for it."""

    a: str
    b: str
    data: Path
    genome: Path | None
    trained: list[str]


def pair_run_dirs(root: Path = RUNS_ROOT) -> dict[str, Path]:
    """{"Enformer": runs/tiny-full, "S-Enformer": runs/tiny}: where `senformer train` puts the
    tiny model with each attention (`training.default_run_dir`)."""
    from senformer_cli.config import ModelConfig
    from senformer_cli.training import default_run_dir

    return {name: default_run_dir(PRESET, ModelConfig.from_preset(PRESET, attention=attention),
                                  Path(root))
            for name, attention in PAIR}


def has_checkpoint(run_dir: Path) -> bool:
    return ((run_dir / "config.json").is_file()
            and (run_dir / "checkpoints" / "checkpoint").is_file())


def default_pair(data: Path | None = None, genome: Path | None = None, *,
                 root: Path = RUNS_ROOT, seed: int = 0,
                 notify: Callable[[str], None] | None = None,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> DefaultPair:
    """The runs of the tiny Enformer and S-Enformer under `root`, each trained first (the tiny
    recipe on the synthetic data, `senformer train`) where missing; the data to score them on:
    `data`, or the synthetic set's human test split with its genome.

    notify(line) gets one line saying what was chosen (and what will be trained first);
    progress(state) is training's progress callback.
    """
    from senformer_cli.data.synthetic import ensure_synthetic
    from senformer_cli.training import TrainRequest, train

    notify = notify or (lambda line: None)
    runs = pair_run_dirs(root)
    for name, run_dir in runs.items():
        if run_dir.exists() and any(run_dir.iterdir()) and not has_checkpoint(run_dir):
            raise SenformerError(f"{run_dir} ({name}) holds no finished checkpoint; finish it with "
                                 f"`senformer train --out {run_dir} --resume` or start it again "
                                 "with --overwrite")
    missing = [(name, attention) for name, attention in PAIR if not has_checkpoint(runs[name])]
    synthetic = ensure_synthetic(seed) if data is None else None
    if data is None:
        data, genome = synthetic / "human", (genome or synthetic / "human.fa")
    (name_a, _), (name_b, _) = PAIR
    line = (f"no models given: comparing {runs[name_a]} ({name_a}) with {runs[name_b]} "
            f"({name_b}) on {data}")
    if missing:
        commands = " and ".join(
            "`senformer train" + (" --set attention=full`" if attention == "full" else "`")
            for _, attention in missing)
        line += (f"; training {' and '.join(str(runs[name]) for name, _ in missing)} first on the "
                 f"synthetic data ({commands}, a few CPU minutes each)")
    notify(line + "; give A B [--data DIR] to compare others")
    trained = []
    for name, attention in missing:
        request = TrainRequest(preset=PRESET, runs_root=Path(root),
                               model_overrides={} if attention == "sparse" else
                               {"attention": attention})
        result = train(request, progress=progress, ensure_data=lambda: ensure_synthetic(seed))
        if result.status != "completed":
            raise SenformerError(f"training {result.run_dir} stopped: {result.message}")
        trained.append(str(result.run_dir))
    return DefaultPair(str(runs[name_a]), str(runs[name_b]), Path(data),
                       Path(genome) if genome is not None else None, trained)


# ------------------------------------------------------- evaluate --model enformer-pretrained
BASENJI_DATA = "gs://basenji_barnyard/data"
GENOME_URLS = {"human": "https://storage.googleapis.com/basenji_barnyard2/hg38.ml.fa.gz",
               "mouse": "https://storage.googleapis.com/basenji_barnyard2/mm10.ml.fa.gz"}


def pretrained_inputs_missing(spec: str, data: Path | None, genome: Path | None,
                              weights: Path | None) -> str | None:
    """For `evaluate --model enformer-pretrained`: None when the published weights are found and
    --data is given; else a few lines saying where the weights were looked for and what to
    download (weights, the Basenji data, the genome FASTA for --genome)."""
    from senformer_cli.model.load import (PRETRAINED, PRETRAINED_FILES, PRETRAINED_URL,
                                          find_pretrained, pretrained_locations)
    from senformer_cli.paths import cache_dir

    if spec != PRETRAINED:
        return None
    lines = []
    try:
        find_pretrained(weights)
        weights_found = True
    except SenformerError:
        weights_found = False
    if not weights_found:
        looked = [f"{label} {folder}" if label != "the cache" else str(folder)
                  for label, folder in pretrained_locations(weights) if folder is not None]
        unset = [label for label, folder in pretrained_locations(weights)
                 if folder is None and label.startswith("$")]
        files = ", ".join(PRETRAINED_FILES)
        lines.append(f"  weights: the published Enformer checkpoint ({files}) "
                     f"is not in {', '.join(looked)}"
                     + (f" ({', '.join(unset)} unset)" if unset else "")
                     + f"; get it (about 1 GB): gsutil -m cp '{PRETRAINED_URL}' "
                     f"{cache_dir() / PRETRAINED}/")
    if data is None:
        lines.append(f"  data: no --data. The Basenji/Enformer data are {BASENJI_DATA} (requester "
                     "pays, about 320 GB; human/ is enough, its test split alone is 1,937 "
                     f"records): gsutil -u YOUR_PROJECT -m cp -r {BASENJI_DATA}/human data/ "
                     "(check it with `senformer data inspect data/human`)")
    if not lines:
        return None
    if genome is None:
        lines.append(f"  genome: add --genome hg38.ml.fa (mouse: mm10.ml.fa; {GENOME_URLS['human']}"
                     ", gunzip it), the FASTA the records were cut from, to extend the 131,072-bp "
                     "records to the model's 196,608 bp with their real flanks (else N padding)")
    lines.append("  then: senformer evaluate --model enformer-pretrained --data data/human "
                 "--genome hg38.ml.fa")
    missing = " and ".join(what for what, absent in (("the published weights", not weights_found),
                                                      ("the data", data is None)) if absent)
    return f"--model {PRETRAINED} needs {missing}:\n" + "\n".join(lines)
