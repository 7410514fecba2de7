"""Backends of the fused ops: which are available, why the others are not, and which one a call uses.

    torch   the pure-torch reference; always available, any device
    cpp     C++ kernels of deepfast._C; CPU tensors
    cuda    CUDA kernels of deepfast._C; CUDA tensors (needs a CUDA build of the extension)
    triton  Triton kernels (deepfast.kernels); CUDA tensors, or CPU tensors under TRITON_INTERPRET=1

Each call picks the fastest backend available for its device (cpu: cpp, torch; cuda: cuda, triton,
torch). ``use_backend(name)`` or the environment variable DEEPFAST_BACKEND (read at import) force one.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

BACKENDS = ("torch", "cpp", "cuda", "triton")
_AUTO_ORDER = {"cpu": ("cpp", "torch"), "cuda": ("cuda", "triton", "torch")}

try:
    from deepfast import _C as extension

    _extension_error = ""
except ImportError as exc:  # never break `import deepfast`: the torch backend still serves
    extension = None
    _extension_error = f"deepfast._C did not load ({exc}); reinstall with `pip install --no-build-isolation .`"


class BackendUnavailable(RuntimeError):
    """A backend was asked for that cannot run here, or cannot run tensors on this device."""


@dataclass(frozen=True)
class Status:
    available: bool
    detail: str  # what runs, or why it cannot


def triton_interpreted() -> bool:
    """True when Triton kernels run in the interpreter (TRITON_INTERPRET=1), on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def status() -> dict[str, Status]:
    """Availability of every backend on this machine, with the reason for each missing one."""
    has_gpu = torch.cuda.is_available()
    gpu = "" if not has_gpu else f" on {torch.cuda.get_device_name()}"
    result = {"torch": Status(True, "pure-torch reference, any device")}
    if extension is None:
        result["cpp"] = Status(False, _extension_error)
        result["cuda"] = Status(False, _extension_error)
    else:
        threads = f"{extension.num_threads()} threads" + ("" if extension.openmp else ", no OpenMP")
        result["cpp"] = Status(True, f"C++ kernels, {threads}")
        if "cuda" not in extension.backends:
            why = "deepfast._C was built without CUDA kernels (CPU-only torch, nvcc not found, or DEEPFAST_CUDA=0)"
            result["cuda"] = Status(False, why)
        elif not has_gpu:
            result["cuda"] = Status(False, f"built for sm {extension.cuda_archs}, but torch sees no CUDA GPU")
        else:
            result["cuda"] = Status(True, f"CUDA kernels{gpu}")
    result["triton"] = _triton_status(has_gpu, gpu)
    return result


def _triton_status(has_gpu: bool, gpu: str) -> Status:
    if importlib.util.find_spec("triton") is None:
        return Status(False, "triton is not installed (pip install triton)")
    try:
        import deepfast.kernels  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken triton install must not break deepfast
        return Status(False, f"deepfast.kernels did not import: {exc}")
    if triton_interpreted():
        return Status(True, "Triton interpreter (TRITON_INTERPRET=1), CPU tensors, slow: for tests")
    if not has_gpu:
        return Status(False, "Triton needs a CUDA GPU (or TRITON_INTERPRET=1 to interpret on the CPU)")
    return Status(True, f"Triton kernels{gpu}")


def runs_on(name: str, device_type: str) -> bool:
    """Whether backend ``name`` runs tensors of this device type (whether it is available aside)."""
    if name == "torch":
        return True
    if name == "cpp":
        return device_type == "cpu"
    if name == "cuda":
        return device_type == "cuda"
    return device_type == "cuda" or (device_type == "cpu" and triton_interpreted())


def _check_name(name: str, source: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)} or 'auto', got {name!r}")
    if not status()[name].available:
        raise BackendUnavailable(f"backend {name!r} ({source}) is not available: {status()[name].detail}")


# The forced backend and what forced it; DEEPFAST_BACKEND is read once, here, and checked at the first call.
_forced: str | None = (
    None if os.environ.get("DEEPFAST_BACKEND", "auto") in ("", "auto") else os.environ["DEEPFAST_BACKEND"]
)
_forced_by = "DEEPFAST_BACKEND"


def forced() -> str | None:
    """The backend forced by use_backend() or DEEPFAST_BACKEND, or None for the automatic choice."""
    return _forced


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force the backend of every deepfast op called inside the block ("auto" restores the choice).

    Not thread-local: the setting is for the whole process while the block runs.
    """
    global _forced, _forced_by
    if name != "auto":
        _check_name(name, "use_backend")
    previous = _forced, _forced_by
    _forced, _forced_by = (None if name == "auto" else name), "use_backend"
    try:
        yield
    finally:
        _forced, _forced_by = previous


@functools.cache
def _auto(device_type: str) -> str:
    order = _AUTO_ORDER.get(device_type, ("torch",))
    return next(name for name in order if status()[name].available and runs_on(name, device_type))


def select(device: torch.device) -> str:
    """The backend that runs an op on tensors of ``device``: the forced one, else the fastest available.

    Under torch.compile the choice is made once, when the function is traced.
    """
    return _select(device.type)


@torch.compiler.assume_constant_result
def _select(device_type: str) -> str:
    if _forced is None:
        return _auto(device_type)
    _check_name(_forced, _forced_by)
    if not runs_on(_forced, device_type):
        raise BackendUnavailable(f"backend {_forced!r} ({_forced_by}) cannot run tensors on {device_type}")
    return _forced
