"""The demo's report folder, written from the steps' outputs (nothing is recomputed here).

    OUT/report.md             the study as a page: tables, and the plots linked and embedded
    OUT/report.html           the same, self-contained (plots inline as base64 PNG, nothing
                              fetched from elsewhere)
    OUT/summary.json          every number of the report (what `senformer demo --json` prints)
    OUT/tables/<name>.csv     tidy tables (and <name>.json: the same rows as a list of records):
                              accuracy, comparison, profile, receptive_field, training, steps
    OUT/figures/<name>.png    training_curves, compare, profile, receptive_field

Undefined numbers (e.g. the r of a track type whose tracks all have zero variance) are empty
cells in CSV and null in JSON, never NaN.
"""
from __future__ import annotations

import base64
import html
import json
import math
import shutil
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from senformer_cli.fileio import atomic_path, write_json, write_text

TABLES = ("accuracy", "comparison", "profile", "receptive_field", "training", "steps")
FIGURES = ("training_curves", "compare", "profile", "receptive_field")
ACCURACY_COLUMNS = ("model", "track_type", "tracks", "mean_r", "median_r",
                    "excluded_zero_variance")
PROFILE_COLUMNS = ("model", "attention", "sequence_length_bp", "num_tokens", "status",
                   "seconds_per_step", "peak_memory_bytes", "time_ratio", "memory_ratio")
RF_COLUMNS = ("model", "position_bp", "where", "peak_effect", "peak_bin", "reached_bins",
              "reached_bins_outside_conv_reach", "farthest_reached_bp", "mean_inside_conv_reach",
              "mean_outside_conv_reach", "noise_floor")
TRAINING_METRICS = ("loss", "valid_mean_r", "steps_per_s")
DISPLAY_NAMES = {"full": "Enformer", "sparse": "S-Enformer"}


# ==================================================================== helpers
def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [_clean(row) for row in frame.astype(object).where(frame.notna(), None)
            .to_dict(orient="records")]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _bytes(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    value = float(value)
    return f"{value / 1e9:.2f} GB" if value >= 1e9 else f"{value / 1e6:.0f} MB"


def _seconds(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def _label(kind: str) -> str:
    from senformer_cli.data.targets import TRACK_TYPE_LABELS

    return TRACK_TYPE_LABELS.get(kind, "all tracks" if kind == "all" else kind)


# ==================================================================== gathering
def _training(runs: dict[str, Path]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Long table (model, step, metric, value) of both runs' metrics.csv, and per model the best
    validation and the training speed."""
    from senformer_cli.training import summaries_from_metrics

    frames, info = [], {}
    for name, run_dir in runs.items():
        metrics = pd.read_csv(run_dir / "metrics.csv")
        config = json.loads((run_dir / "config.json").read_text())
        heads = list(config["train"]["data"])
        best, final = summaries_from_metrics(run_dir / "metrics.csv", heads)
        columns = [c for c in metrics.columns if c in TRAINING_METRICS
                   or (c.startswith("valid_r_") and c.endswith("_all"))]
        long = metrics.melt(id_vars=["step"], value_vars=columns, var_name="metric",
                            value_name="value").dropna()
        long = long[long["value"].map(lambda v: math.isfinite(float(v)))]
        long.insert(0, "model", name)
        frames.append(long)
        losses = metrics["loss"].dropna()
        rates = metrics["steps_per_s"].dropna() if "steps_per_s" in metrics else pd.Series([])
        info[name] = {
            "run": str(run_dir), "attention": config["model"]["attention"],
            "sequence_length": config["model"]["sequence_length"],
            "organisms": heads, "steps": int(config["train"]["steps"]),
            "batch_size": int(config["train"]["batch_size"]),
            "learning_rate": float(config["train"]["learning_rate"]),
            "final_loss": float(losses.iloc[-1]) if len(losses) else None,
            "best_step": best["step"] if best else None,
            "best_valid_mean_r": best["valid_mean_r"] if best else None,
            "final_valid_mean_r": final["valid_mean_r"] if final else None,
            "steps_per_s": float(rates.median()) if len(rates) else None,
        }
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["model", "step", "metric", "value"])
    table["step"] = table["step"].astype(int)
    return table.sort_values(["model", "metric", "step"], kind="stable"), info


def _accuracy(steps_dir: Path, names: Sequence[tuple[str, str]]) -> pd.DataFrame:
    from senformer_cli.data.targets import TRACK_TYPES

    rows = []
    for name, key in names:
        summary = json.loads((steps_dir / f"evaluate-{key}" / "summary.json").read_text())
        for kind in (*TRACK_TYPES, "all"):
            info = summary.get(kind) or {}
            if not info.get("tracks"):
                continue
            rows.append({"model": name, "track_type": kind, "tracks": info["tracks"],
                         "mean_r": info.get("mean_r"), "median_r": info.get("median_r"),
                         "excluded_zero_variance": info.get("excluded_zero_variance")})
    return pd.DataFrame(rows, columns=list(ACCURACY_COLUMNS))


def _profile(steps_dir: Path) -> tuple[pd.DataFrame | None, dict[str, Any] | None]:
    path = steps_dir / "profile" / "profile.json"
    if not path.is_file():
        return None, None
    result = json.loads(path.read_text())
    # The profiler names the models by preset (enformer, s-enformer); the report by attention.
    names = {row["model"]: DISPLAY_NAMES.get(row["attention"], row["model"])
             for row in result["rows"]}
    rows = [{**{column: row.get(column) for column in PROFILE_COLUMNS},
             "model": names[row["model"]]} for row in result["rows"]]
    result["longest_fitting"] = {names.get(model, model): length
                                 for model, length in (result.get("longest_fitting") or {}).items()}
    return pd.DataFrame(rows, columns=list(PROFILE_COLUMNS)), result


def _receptive_field(steps_dir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    summary = json.loads((steps_dir / "receptive-field" / "summary.json").read_text())
    rows, reach = [], []
    for model in summary["models"]:
        far = [p["farthest_reached_bp"] for p in model["positions"]
               if p.get("farthest_reached_bp") is not None]
        outside = [p["reached_bins_outside_conv_reach"] for p in model["positions"]]
        reach.append({
            "model": model["name"], "attention": model["attention"],
            "theoretical_receptive_field": model["theoretical_receptive_field"],
            "noise_floor": model["noise_floor"], "target_length": model["target_length"],
            "bin_size": model["bin_size"], "sequence_length": model["sequence_length"],
            "farthest_reached_bp": max(far) if far else None,
            "mean_reached_bins": (sum(p["reached_bins"] for p in model["positions"])
                                  / len(model["positions"])) if model["positions"] else None,
            "mean_reached_bins_outside_conv_reach": (sum(outside) / len(outside)
                                                     if outside else None)})
        for position in model["positions"]:
            rows.append({"model": model["name"], "noise_floor": model["noise_floor"],
                         **{c: position.get(c) for c in RF_COLUMNS if c in position}})
    frame = pd.DataFrame(rows, columns=list(RF_COLUMNS))
    return frame, {"settings": summary["settings"], "models": reach}


# ==================================================================== writing
def write_report(result, data_root: Path) -> dict[str, Any]:
    """Write the report folder of a completed demo into `result.out`; return summary.json's
    content."""
    from senformer_cli.demo import HEAD, MODELS, machine
    from senformer_cli.plots_demo import training_curves

    out = Path(result.out)
    steps_dir = out / "steps"
    runs = {}
    for name, key, _ in MODELS:
        step = next(s for s in result.steps if s.name == f"train-{key}")
        runs[name] = Path(step.output)
    training, training_info = _training(runs)
    accuracy = _accuracy(steps_dir, [(name, key) for name, key, _ in MODELS])
    comparison = pd.read_csv(steps_dir / "compare" / "compare.csv")
    compare_summary = json.loads((steps_dir / "compare" / "compare.json").read_text())
    profile_table, profile = _profile(steps_dir)
    rf_table, rf = _receptive_field(steps_dir)
    steps_table = pd.DataFrame([{"step": s.name, "label": s.label, "status": s.status,
                                 "seconds": s.seconds, "seconds_when_made": s.seconds_when_made}
                                for s in result.steps])
    tables = {"accuracy": accuracy, "comparison": comparison, "receptive_field": rf_table,
              "training": training, "steps": steps_table}
    if profile_table is not None:
        tables["profile"] = profile_table

    profile_step = next((s for s in result.steps if s.name == "profile"), None)
    summary: dict[str, Any] = {
        "title": "S-Enformer demo: Enformer vs S-Enformer on the synthetic data",
        "out": str(out), "quick": result.plan.quick, "seed": result.plan.seed,
        "data": str(data_root), "head": HEAD, "seconds": result.seconds,
        "machine": machine(),
        "models": training_info,
        "accuracy": _records(accuracy),
        "comparison": {"a": compare_summary["a"], "b": compare_summary["b"],
                       "split": compare_summary.get("split"),
                       "num_sequences": compare_summary.get("num_sequences"),
                       "rows": _records(comparison)},
        "profile": ({"available": True, "base": profile.get("base"), "mode": profile.get("mode"),
                     "component": profile.get("component"),
                     "max_memory_bytes": profile.get("max_memory_bytes"),
                     "longest_fitting": profile.get("longest_fitting"),
                     "rows": _records(profile_table)} if profile is not None else
                    {"available": False,
                     "note": profile_step.detail if profile_step else "not run"}),
        "receptive_field": rf,
        "steps": _records(steps_table),
    }
    summary = _clean(summary)

    figures_dir, tables_dir = out / "figures", out / "tables"
    with atomic_path(tables_dir) as tmp:
        tmp.mkdir()
        for name, frame in tables.items():
            frame.to_csv(tmp / f"{name}.csv", index=False)
            (tmp / f"{name}.json").write_text(json.dumps(_records(frame), indent=1) + "\n")
    figures = {}
    with atomic_path(figures_dir) as tmp:
        tmp.mkdir()
        training_curves(training, tmp / "training_curves.png")
        figures["training_curves"] = "figures/training_curves.png"
        for name, source in (("compare", steps_dir / "compare" / "compare.png"),
                             ("profile", steps_dir / "profile" / "profile.png"),
                             ("receptive_field", steps_dir / "receptive-field" /
                              "receptive_field.png")):
            if source.is_file():
                shutil.copyfile(source, tmp / f"{name}.png")
                figures[name] = f"figures/{name}.png"
    summary["files"] = {"report_md": "report.md", "report_html": "report.html",
                        "summary": "summary.json",
                        "tables": {name: f"tables/{name}.csv" for name in tables},
                        "figures": figures}
    blocks = _blocks(summary, result)
    write_text(out / "report.md", _markdown(blocks))
    write_text(out / "report.html", _html(blocks, summary["title"], out))
    write_json(out / "summary.json", summary)
    return summary


# ==================================================================== one page, two renderers
def _blocks(summary: dict[str, Any], result) -> list[tuple]:
    """The report as blocks: ("h1"|"h2"|"p", text), ("table", headers, rows),
    ("figure", path, caption), ("links", [(text, href)])."""
    from senformer_cli.demo import display_path

    plan = result.plan
    machine = summary["machine"]
    made = sum(s["seconds_when_made"] or 0.0 for s in summary["steps"])
    load = machine.get("load_average")
    info = summary["models"]
    first = next(iter(info.values()))
    blocks: list[tuple] = [("h1", summary["title"])]
    blocks.append(("p", (
        f"Enformer (full attention) and S-Enformer (BigBird block-sparse attention), both the "
        f"`tiny` width (96 channels, 2 transformer layers), trained with the same seed "
        f"({plan.seed}), recipe and budget ({first['steps']:,} steps of batch {first['batch_size']}"
        f", learning rate {first['learning_rate']:g}, on {' and '.join(first['organisms'])}) on "
        f"the built-in synthetic data at {first['sequence_length']:,} bp, then evaluated on the "
        f"{summary['comparison']['split']} split ({summary['comparison']['num_sequences']} "
        f"sequences, {summary['head']} head), compared, profiled and probed for their receptive "
        f"field." + (" This is the --quick run: a few training steps, so the numbers show the "
                     "pipeline, not what the models can learn." if plan.quick else ""))))
    blocks.append(("p", (
        f"Data: `{display_path(summary['data'])}`. Machine: {machine.get('cpu_count')} CPUs"
        f"{' (' + machine['cpu_model'] + ')' if machine.get('cpu_model') else ''}"
        f"{', load average ' + ' / '.join(f'{x:.1f}' for x in load) if load else ''}; "
        f"TensorFlow {machine.get('tensorflow', '?')}. Wall time of this invocation "
        f"{summary['seconds']:.0f} s; the steps took {made:.0f} s when they were computed.")))

    # Steps.
    blocks.append(("h2", "Steps"))
    blocks.append(("table", ["step", "what", "status", "seconds now", "seconds when made"],
                   [[s["step"], s["label"], s["status"], _seconds(s["seconds"]),
                     _seconds(s["seconds_when_made"]) if s["status"] != "skipped" else "-"]
                    for s in summary["steps"]]))

    # Training.
    blocks.append(("h2", "Training"))
    blocks.append(("table", ["model", "attention", "steps", "steps/s", "final loss",
                             "best valid mean r (step)"],
                   [[name, m["attention"], _fmt(m["steps"]), _fmt(m["steps_per_s"], 2),
                     _fmt(m["final_loss"], 4),
                     f"{_fmt(m['best_valid_mean_r'])} ({_fmt(m['best_step'])})"]
                    for name, m in info.items()]))
    blocks.append(("figure", summary["files"]["figures"].get("training_curves"),
                   "Training loss and validation mean Pearson r of both models."))

    # Accuracy and comparison.
    comparison = summary["comparison"]
    blocks.append(("h2", "Test-split accuracy and comparison"))
    blocks.append(("p", (
        f"Mean r: the Enformer paper's metric (each track's Pearson r over all (sequence, bin) "
        f"pairs, mean over the tracks of a type). Per sequence: each track's r over one "
        f"sequence's bins, averaged over the type; r(A,B) is the Pearson r between the two "
        f"models' per-sequence values, B >= A the share of sequences where "
        f"{comparison['b']} is at least as good as {comparison['a']}, p the paired Wilcoxon "
        f"signed-rank test (the S-Enformer report's comparison).")))
    blocks.append(("table", ["track type", "seqs", f"mean r {comparison['a']}",
                             f"mean r {comparison['b']}", "B - A", "r(A,B)", "B >= A", "p"],
                   [[_label(row["track_type"]), _fmt(row["sequences"]), _fmt(row["mean_r_a"]),
                     _fmt(row["mean_r_b"]),
                     "-" if row["difference"] is None else f"{row['difference']:+.3f}",
                     _fmt(row["r_between"]),
                     "-" if row["percent_b_ge_a"] is None else f"{row['percent_b_ge_a']:.0f}%",
                     _p(row["wilcoxon_p"])] for row in comparison["rows"]]))
    blocks.append(("figure", summary["files"]["figures"].get("compare"),
                   f"Per-sequence r of {comparison['a']} (x) against {comparison['b']} (y), one "
                   "panel per track type."))

    # Profile.
    profile = summary["profile"]
    blocks.append(("h2", "Memory and time"))
    if profile.get("available"):
        limit = profile.get("max_memory_bytes")
        longest = profile.get("longest_fitting") or {}
        what = (f"one attention layer of the tiny width (forward and backward at L / 128 "
                f"tokens, as `senformer profile --component attention`)"
                if profile.get("component") == "attention" else
                f"one {profile.get('mode', 'train')} step of the whole tiny model")
        blocks.append(("p", (
            f"Peak memory and time of {what} at each input length, each in a fresh process (peak "
            f"resident memory above the process baseline; median step time). A row whose "
            f"estimated peak is over the limit is skipped, not run. Longest input that fits"
            f"{' in ' + _bytes(limit) if limit else ''}: "
            + "; ".join(f"{model} {_fmt(length)} bp" if length else f"{model}: none"
                        for model, length in longest.items()) + ".")))
        blocks.append(("table", ["model", "input bp", "tokens", "status", "s/step", "peak memory",
                                 "time ratio", "memory ratio"],
                       [[row["model"], _fmt(row["sequence_length_bp"]), _fmt(row["num_tokens"]),
                         row["status"], _seconds(row["seconds_per_step"]),
                         _bytes(row["peak_memory_bytes"]), _fmt(row["time_ratio"], 2),
                         _fmt(row["memory_ratio"], 2)] for row in profile["rows"]]))
        blocks.append(("figure", summary["files"]["figures"].get("profile"),
                       "Peak memory and step time against the input length."))
    else:
        blocks.append(("p", f"Not measured: {profile.get('note')}."))

    # Receptive field.
    rf = summary["receptive_field"]
    settings = rf["settings"]
    blocks.append(("h2", "Receptive field"))
    blocks.append(("p", (
        f"{len(settings['positions'])} positions x {settings['repeats']} random sequences: one "
        f"base changed, the mean |mutant - reference| per output bin over repeats and tracks. A "
        f"bin counts as reached above the float32 noise floor. Reach: the farthest reached bin's "
        f"centre from the mutated base.")))
    blocks.append(("table", ["model", "theoretical field", "noise floor", "farthest reach bp",
                             "bins reached (mean)", "beyond the conv tower (mean)"],
                   [[m["model"], m["theoretical_receptive_field"], f"{m['noise_floor']:.2g}",
                     _bp(m["farthest_reached_bp"]),
                     f"{_fmt(m['mean_reached_bins'], 1)} / {m['target_length']}",
                     _fmt(m["mean_reached_bins_outside_conv_reach"], 1)] for m in rf["models"]]))
    blocks.append(("figure", summary["files"]["figures"].get("receptive_field"),
                   "Effect of one base change per output bin (log scale), per mutated position."))

    # Files.
    blocks.append(("h2", "Files"))
    links = [(f"tables/{name}.csv", path) for name, path in summary["files"]["tables"].items()]
    links += [(f"tables/{name}.json", path.replace(".csv", ".json"))
              for name, path in summary["files"]["tables"].items()]
    links += [("summary.json", "summary.json")]
    links += [(f"{name} run", str(Path(m["run"]).relative_to(summary["out"]))
               if Path(m["run"]).is_relative_to(summary["out"]) else m["run"])
              for name, m in info.items()]
    blocks.append(("links", links))
    return blocks


def _bp(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _p(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}"


def _markdown(blocks: list[tuple]) -> str:
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            lines += [f"# {block[1]}", ""]
        elif kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines.append("| " + " | ".join(headers) + " |")
            lines.append("|" + "|".join("---" for _ in headers) + "|")
            for row in rows:
                lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
            lines.append("")
        elif kind == "figure":
            if block[1]:
                lines += [f"[![{block[2]}]({block[1]})]({block[1]})", "", f"*{block[2]}*", ""]
        elif kind == "links":
            lines += [" · ".join(f"[{text}]({href})" for text, href in block[1]), ""]
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 980px; margin: 2em auto; padding: 0 1em; color: #1b1f23; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #d0d7de; padding: .3em .6em; }
th { background: #f6f8fa; text-align: left; }
td { font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #57606a; font-size: .9em; }
code { background: #f6f8fa; padding: 0 .25em; border-radius: 3px; }
.links a { margin-right: 1em; }
"""


def _inline(text: str) -> str:
    """Escape, then `code` spans."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html(blocks: list[tuple], title: str, out: Path) -> str:
    body: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{_inline(block[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "table":
            headers, rows = block[1], block[2]
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
            cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row)
                            + "</tr>" for row in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        elif kind == "figure":
            if block[1]:
                data = base64.b64encode((out / block[1]).read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(block[2])}" '
                            f'data-file="{html.escape(block[1])}" '
                            f'src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
        elif kind == "links":
            body.append('<p class="links">' + "".join(
                f'<a href="{html.escape(href)}">{html.escape(text)}</a>'
                for text, href in block[1]) + "</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
