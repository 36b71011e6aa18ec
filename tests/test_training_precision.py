"""`--precision bf16`: bfloat16 compute over float32 variables, against the same run in float32."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from train_fixtures import NO_DROPOUT, SMALL, checkpoint_weights, data_args, train_synthetic

from senformer_cli.config import ModelConfig

SETTINGS = {"steps": 2, "batch_size": 2, "learning_rate": 0.001, "warmup_steps": 2,
            "eval_every": 100, "eval_sequences": 1, "checkpoint_every": 2, "log_every": 1,
            "seed": 3}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_synthetic(tmp_path_factory)


@pytest.mark.slow  # two short training runs: about a minute
def test_bf16_steps_stay_close_to_fp32_and_keep_float32_weights(data: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    """Same seed, batches and initial weights: bfloat16 carries 8 bits of mantissa (0.4% per
    rounding), so the loss of each step is within 0.5% of float32's (measured 0.03%) and the
    gradient norm within 5% (measured 2.5%); the losses are not equal (bfloat16 really computed)
    and the weights stay float32. On a CPU without bfloat16 arithmetic (its flags replaced by an
    AVX2 machine's) the bf16 run says so in one line, and the fp32 run does not."""
    from senformer_cli import host
    from senformer_cli.training import TrainRequest, train

    avx2 = host.cpu_flags(AVX2_FLAGS)
    monkeypatch.setattr(host, "cpu_flags", lambda cpuinfo=None: avx2)
    dirs, genomes = data_args(data, ("human",))
    logged, notices = {}, {}
    for precision in ("fp32", "bf16"):
        run = tmp_path / precision
        lines: list[str] = []
        train(TrainRequest(data=dirs, genomes=genomes, out=run, preset="tiny",
                           model_overrides={**SMALL, **NO_DROPOUT},
                           train_overrides={**SETTINGS, "precision": precision}),
              notify=lines.append)
        notices[precision] = [line for line in lines if line.startswith("--precision bf16:")]
        with (run / "metrics.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        logged[precision] = np.array([[float(r["loss"]), float(r["grad_norm"])] for r in rows])
    assert len(notices["bf16"]) == 1 and notices["fp32"] == []
    fp32, bf16 = logged["fp32"], logged["bf16"]
    print("loss, grad norm per step: fp32", fp32.tolist(), "bf16", bf16.tolist())
    assert fp32.shape == bf16.shape == (2, 2)
    assert not np.array_equal(fp32[:, 0], bf16[:, 0])
    np.testing.assert_allclose(bf16[:, 0], fp32[:, 0], rtol=0.005)
    np.testing.assert_allclose(bf16[:, 1], fp32[:, 1], rtol=0.05)
    config = ModelConfig.from_preset("tiny", **SMALL, **NO_DROPOUT)
    weights = checkpoint_weights(tmp_path / "bf16" / "checkpoints" / "ckpt-2", config)
    dtypes = {array.dtype for array in weights.values()} - {np.dtype(np.int32), np.dtype(np.int64)}
    assert dtypes == {np.dtype(np.float32)}  # (the int tables: random blocks, counters)


AVX2_FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"
AMX_FLAGS = ("processor\t: 0\n"
             "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile\n")


@pytest.mark.parametrize("cpuinfo, accelerators, warned", [
    (AVX2_FLAGS, 0, True),            # this project's AMD EPYC: bfloat16 emulated
    (AMX_FLAGS, 0, False),            # Sapphire Rapids and newer
    (AMX_FLAGS.replace(" amx_bf16", ""), 0, False),  # AVX-512 BF16 alone (Cooper Lake, Zen 4)
    (AVX2_FLAGS, 1, False),           # a GPU computes the step
    ("processor\t: 0\n", 0, False),   # flags unreadable: say nothing rather than guess
])
def test_bf16_on_a_cpu_without_bfloat16_arithmetic_says_so(cpuinfo, accelerators, warned):
    """--precision bf16 prints one line where the CPU would emulate bfloat16 (5x slower than fp32
    for `tiny` on AVX2), from /proc/cpuinfo's flags."""
    from senformer_cli.precision import slow_bf16_notice

    notice = slow_bf16_notice(accelerators, cpuinfo)
    assert (notice is not None) == warned
    if warned:
        assert notice.startswith("--precision bf16:") and "\n" not in notice


def test_host_facts_read_the_proc_files_fields():
    """The /proc readers behind the reports and the bf16 notice take the named field's value
    (not a field whose name only starts the same), and None where it is missing."""
    from senformer_cli import host

    text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2\nflags2\t: x\n"
    assert host.proc_field("model name", text=text) == "AMD EPYC 7B13"
    assert host.cpu_flags(text) == ["fpu", "avx2"]
    assert host.proc_field("microcode", text=text) is None
    assert host.proc_field("flags", path="/nonexistent/cpuinfo") is None
