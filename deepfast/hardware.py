"""What this CPU is and can do: its model, its vector ISA, and whether bfloat16 runs natively.

Every measurement deepfast reports names the CPU with ``describe()``: speed differs several-fold
between an AVX2-only CPU and one with AVX-512 and native bfloat16.

torch's own kernels use the ISA ``torch.backends.cpu.get_cpu_capability()`` names (the environment
variable ATEN_CPU_CAPABILITY=avx2 lowers it), oneDNN's convolutions the one it detects
(ONEDNN_MAX_CPU_ISA=AVX2 lowers it); ``bf16_native()`` is oneDNN's answer, so both variables together
make an AVX-512 machine behave, for torch, like an AVX2-only one.
"""

from __future__ import annotations

import functools
import os
import platform
import tempfile
import time

import torch

# /proc/cpuinfo flag -> the name people know it by, in the order describe() lists them.
ISA_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_bf16": "AVX512-BF16",
    "avx512_fp16": "AVX512-FP16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
}


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name, with its family and model numbers where the OS gives them."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" in info and "model" in info:
        name += f" (family {info['cpu family']}, model {info['model']})"
    return name


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_isa() -> list[str]:
    """The vector extensions of ISA_FLAGS the CPU has, e.g. ["AVX2", "AVX-512", "AVX512-BF16"]."""
    flags = cpu_flags()
    return [name for flag, name in ISA_FLAGS.items() if flag in flags]


def torch_isa() -> str:
    """The ISA torch's CPU kernels use here: "AVX512", "AVX2", "DEFAULT", ... (ATEN_CPU_CAPABILITY lowers it)."""
    return torch.backends.cpu.get_cpu_capability()


def bf16_native() -> bool:
    """Whether bfloat16 convolutions and matmuls run natively (oneDNN's check: AVX512-BF16 or AMX).

    Where False, torch emulates bfloat16 arithmetic, and autocast to bfloat16 runs 2-5x slower than
    float32 (measured on a Zen 3 CPU with AVX2 only).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def fp16_native() -> bool:
    """Whether float16 convolutions and matmuls run natively (oneDNN's check: AVX512-FP16 or AMX-FP16);
    where False, autocast to float16 on the CPU is emulated, slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


# The clones of deepfast's C++ loops (DF_CPU_CLONES in csrc/common.h), best first, and the
# /proc/cpuinfo flags each needs (GCC's x86-64-v4 and -v3 levels; "abm" is how Linux names LZCNT).
KERNEL_CLONES = (
    ("x86-64-v4 (AVX-512)", frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma"})),
    ("x86-64-v3 (AVX2)", frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"})),
)


def kernel_isa() -> str:
    """The clone of deepfast's C++ CPU loops that runs here, as GCC's loader picks it from the CPU's
    features among those built (deepfast._C.cpu_clones; a DEEPFAST_CPU_ISA=avx2 build has no AVX-512 one):
    "x86-64-v4 (AVX-512)", "x86-64-v3 (AVX2)" or "baseline x86-64" (no clones off x86-64)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"baseline ({platform.machine() or 'unknown'}: clones are built for x86-64 only)"
    from deepfast import backends

    built = getattr(backends.extension, "cpu_clones", ("x86-64-v4", "x86-64-v3"))
    flags = cpu_flags()
    return next(
        (name for name, needs in KERNEL_CLONES if needs <= flags and name.split()[0] in built), "baseline x86-64"
    )


def autocast_support() -> dict[str, bool]:
    """{"bf16": native?, "fp16": native?}: which autocast dtypes run natively on this CPU."""
    return {"bf16": bf16_native(), "fp16": fp16_native()}


def busy_cpus(seconds: float = 0.5) -> float:
    """How many CPUs other work keeps busy now: the non-idle share of all CPUs' time in /proc/stat over
    ``seconds``, times the CPU count (Linux); elsewhere the 1-minute load average. Measured over an
    instant, so a job that has just ended does not count, as it does in the load average for a minute."""

    def times() -> list[int]:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:]]

    try:
        before = times()
    except OSError:
        return os.getloadavg()[0]
    time.sleep(seconds)
    delta = [b - a for a, b in zip(before, times())]
    total = sum(delta)
    idle = delta[3] + (delta[4] if len(delta) > 4 else 0)  # idle + iowait
    return (total - idle) / total * (os.cpu_count() or 1) if total > 0 else 0.0


def describe() -> str:
    """One line naming the CPU, its ISA and what torch uses of it, e.g. for a benchmark's header."""
    isa = ", ".join(cpu_isa()) or "no AVX2"
    limits = [f"{var}={os.environ[var]}" for var in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if var in os.environ]
    return (
        f"{cpu_model()}, {os.cpu_count()} logical CPUs; ISA {isa}; torch kernels {torch_isa()}, "
        f"bf16 {'native' if bf16_native() else 'emulated'}" + (f" ({', '.join(limits)})" if limits else "")
    )


def separate_compile_cache() -> None:
    """Under ATEN_CPU_CAPABILITY (torch held to a lower ISA, as the docs use it to measure what an
    AVX2-only CPU runs), point torch.compile's kernel cache at a folder of that capability, unless
    TORCHINDUCTOR_CACHE_DIR is set. torch's cache key leaves the variable out: a kernel cached under
    ``ATEN_CPU_CAPABILITY=avx2`` and loaded without it corrupted the heap (torch 2.13, "corrupted
    double-linked list") or gave wrong results. ``import deepfast`` calls this first (importing the
    ops sets torch's default folder)."""
    capability = os.environ.get("ATEN_CPU_CAPABILITY")
    if capability and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        folder = f"torchinductor-{os.getuid() if hasattr(os, 'getuid') else 'user'}-aten-{capability}"
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), folder)
