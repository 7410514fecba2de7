"""`deepfast info`: versions, the build of the extension, the backends."""

from __future__ import annotations

import argparse
import platform

import torch

import deepfast
from deepfast import backends, hardware


def info(args: argparse.Namespace) -> int:
    """Print versions, the build of deepfast._C, and every backend with why it is missing."""
    print(f"deepfast {deepfast.__version__}  torch {torch.__version__}  python {platform.python_version()}")
    ext = backends.extension
    if ext is not None:
        archs = f", CUDA archs {ext.cuda_archs}" if ext.cuda_archs else ""
        print(
            f"deepfast._C {ext.version}: built against torch {ext.torch_version}, kernels {', '.join(ext.backends)}"
            f"{archs}, OpenMP {'on' if ext.openmp else 'off'}"
        )
    print(f"CPU: {hardware.describe()}")
    print(f"deepfast C++ kernels on this CPU: the {hardware.kernel_isa()} clone (from the CPU flags)")
    native = hardware.autocast_support()
    print(
        "autocast on this CPU: "
        + ", ".join(
            f"{amp} {'native' if ok else 'emulated (slower than float32: leave --amp / amp= unset here)'}"
            for amp, ok in native.items()
        )
    )
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"CUDA GPU: {gpu}")
    print("\nbackend  available  detail")
    for name, status in backends.status().items():
        print(f"{name:<8} {'yes' if status.available else 'no':<10} {status.detail}")
    print()
    if backends.forced() is not None:
        print(f"forced: {backends.forced()}")
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        try:
            print(f"{device} tensors run on: {backends.select(torch.device(device))}")
        except (backends.BackendUnavailable, ValueError, FileNotFoundError) as exc:
            print(f"{device} tensors: error: {exc}")
    return 0


def add_parsers(commands) -> None:
    p = commands.add_parser("info", help="versions, build and available backends (and why the others are not)")
    p.set_defaults(func=info)
