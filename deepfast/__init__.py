"""deepfast: fast generative imaging models and adversarial robustness for PyTorch.

The hot paths run in fused kernels (C++ on the CPU, CUDA and Triton on NVIDIA GPUs) with a
pure-torch reference as the definition and fallback; see ``deepfast.backends``.
"""

from importlib.metadata import PackageNotFoundError, version

from deepfast import hardware

hardware.separate_compile_cache()  # before the ops' registration sets torch.compile's cache folder

from deepfast import backends, losses, nn, ops  # noqa: E402
from deepfast.backends import BackendUnavailable, use_backend  # noqa: E402
from deepfast.ops import reparameterize_kl  # noqa: E402

try:
    __version__ = version("deepfast")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["BackendUnavailable", "backends", "losses", "nn", "ops", "reparameterize_kl", "use_backend", "__version__"]
