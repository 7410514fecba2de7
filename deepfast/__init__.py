"""deepfast: fast generative imaging models and adversarial robustness for PyTorch.

The hot paths run in fused kernels (C++ on the CPU, CUDA and Triton on NVIDIA GPUs) with a
pure-torch reference as the definition and fallback; see ``deepfast.backends``.
"""

from importlib.metadata import PackageNotFoundError, version

from deepfast import hardware

hardware.separate_compile_cache()  # before the ops' registration sets torch.compile's cache folder

from deepfast import backends, losses, nn, ops  # noqa: E402
from deepfast.backends import BackendUnavailable, use_backend  # noqa: E402
from deepfast.ops.cycle_l1 import cycle_l1  # noqa: E402
from deepfast.ops.norm_leaky_relu import batch_norm_leaky_relu, instance_norm_leaky_relu  # noqa: E402
from deepfast.ops.pgd_step import pgd_random_start, pgd_step, pgd_step_  # noqa: E402
from deepfast.ops.reparameterize_kl import reparameterize_kl  # noqa: E402

try:
    __version__ = version("deepfast")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

# Every public op is here too (deepfast.ops holds them with their float64 references).
__all__ = [
    "BackendUnavailable",
    "backends",
    "batch_norm_leaky_relu",
    "cycle_l1",
    "instance_norm_leaky_relu",
    "losses",
    "nn",
    "ops",
    "pgd_random_start",
    "pgd_step",
    "pgd_step_",
    "reparameterize_kl",
    "use_backend",
    "__version__",
]
