"""senformer: Enformer and S-Enformer (BigBird block-sparse attention) from one command line."""
import os

# TensorFlow's C++ start-up chatter (CUDA probing, CPU flags) drowns the tool's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
