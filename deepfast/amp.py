"""Mixed precision by name, shared by the trainers (``--amp``) and the attacks (``amp=``).

"bf16" and "fp16" run eligible ops (convolutions, matmuls) under ``torch.autocast`` in bfloat16 or
float16; None runs everything in the model's own dtype.

On a CPU without native support for the dtype (bfloat16: AVX512-BF16 or AMX; float16: AVX512-FP16 or
AMX-FP16, as oneDNN reports it, ``deepfast.hardware``) torch emulates it, several times slower than
float32: the first autocast of that dtype on such a CPU warns (``EmulatedAmpWarning``, once per
process and dtype), naming the CPU.
"""

from __future__ import annotations

import warnings

import torch

from deepfast import hardware

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_checked: set[str] = set()  # the amp settings whose CPU support was checked in this process


class EmulatedAmpWarning(UserWarning):
    """amp="bf16" / "fp16" on a CPU that emulates that dtype: slower than float32, not faster."""


def check_amp(amp: object, name: str = "amp") -> str | None:
    """amp: None, "bf16" or "fp16"; returned as it is."""
    if amp is not None and amp not in AMP_DTYPES:
        raise ValueError(f"{name} must be one of {', '.join(AMP_DTYPES)} or None, got {amp!r}")
    return amp


def warn_if_emulated(device_type: str, amp: str | None) -> None:
    """Warns (once per process and dtype) when ``amp`` runs on a CPU that has no native support for it."""
    if device_type != "cpu" or amp is None or amp in _checked:
        return
    _checked.add(amp)
    native = hardware.bf16_native() if amp == "bf16" else hardware.fp16_native()
    if not native:
        isa = ", ".join(hardware.cpu_isa()) or "no AVX2"
        warnings.warn(
            f"amp={amp!r} on {hardware.cpu_model()} (ISA {isa}), which has no native {AMP_DTYPES[amp]} arithmetic "
            f"as oneDNN reports it: torch emulates it there, and autocast to it runs slower than float32, not faster "
            f"(measured: 2-5x slower for bfloat16 on AVX2-only CPUs, about 2x for float16 without AVX512-FP16). "
            f"Leave amp unset (float32) on this CPU.",
            EmulatedAmpWarning,
            stacklevel=3,
        )


def autocast(device_type: str, amp: str | None, cache: bool = True) -> torch.autocast:
    """``torch.autocast`` on ``device_type`` ("cpu", "cuda") in the dtype ``amp`` names; disabled for None.
    ``cache=False`` casts the weights afresh in every forward (what a CUDA graph replays). Warns once
    when the CPU emulates that dtype (``warn_if_emulated``)."""
    dtype = AMP_DTYPES.get(check_amp(amp))
    warn_if_emulated(device_type, amp)
    return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None, cache_enabled=cache)
