"""senformer: Enformer and S-Enformer (BigBird block-sparse attention) from one command line."""
import os
import platform

# TensorFlow's C++ start-up chatter (CUDA probing, CPU flags) drowns the tool's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's CPU kernels on x86. TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI or
# newer; on a 2-core AVX2 AMD EPYC the `tiny` training step is about 20% faster with them (README,
# "Step speed"), and every x86 machine then runs the same kernels. TF_ENABLE_ONEDNN_OPTS=0 turns
# them off. It takes effect only if TensorFlow is imported after this package.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
