"""Mixed precision (`--precision bf16`): bfloat16 compute over float32 variables.

Inside `mixed_precision()`, every read of a trainable float32 variable by a Sonnet module is cast to
bfloat16 (the variables, their gradients and the optimizer stay float32), and batch norm's moving
averages are updated in float32 and read as bfloat16. Softmaxes compute in float32
(`model.attention.weighted_values`, attention pooling); callers cast the inputs to bfloat16 and
the predictions back to float32 before the loss and the metric. The context matters while a step
is traced: the traced graph keeps the casts.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from senformer_cli import host

# CPU flags (Linux /proc/cpuinfo) of bfloat16 arithmetic: AVX-512 BF16 and AMX.
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def slow_bf16_notice(accelerators: int, cpuinfo: str | None = None) -> str | None:
    """The line `--precision bf16` prints on a CPU without bfloat16 arithmetic, where TensorFlow
    emulates it (the `tiny` step 5x slower than fp32 on a 2-core AVX2 AMD EPYC), else None. No
    line with a GPU or TPU (`accelerators` > 0), or where the CPU's flags cannot be read."""
    if accelerators:
        return None
    flags = host.cpu_flags(cpuinfo)
    if flags is None or any(flag in flags for flag in BFLOAT16_CPU_FLAGS):
        return None
    return ("--precision bf16: this CPU has no bfloat16 arithmetic (AVX-512 BF16 or AMX), so it is "
            "emulated and much slower than fp32; bf16 is for GPUs, TPUs and such CPUs")


@contextlib.contextmanager
def mixed_precision(precision: str = "bf16") -> Iterator[None]:
    """Compute in bfloat16 inside the block when `precision` is "bf16"; fp32 is a no-op."""
    if precision == "fp32":
        yield
        return
    import sonnet as snt
    import tensorflow as tf
    from sonnet.src import custom_getter

    average = snt.ExponentialMovingAverage
    update, value = average.update, average.value

    def cast(variable):
        if isinstance(variable, tf.Variable) and variable.trainable and variable.dtype == tf.float32:
            return tf.cast(variable, tf.bfloat16)
        return variable

    average.update = lambda self, x: update(self, tf.cast(x, tf.float32))
    average.value = property(lambda self: tf.cast(value.fget(self), tf.bfloat16))
    try:
        with custom_getter.custom_variable_getter(cast):
            yield
    finally:
        average.update, average.value = update, value
