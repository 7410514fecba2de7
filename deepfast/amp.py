"""Mixed precision by name, shared by the trainers (``--amp``) and the attacks (``amp=``).

"bf16" and "fp16" run eligible ops (convolutions, matmuls) under ``torch.autocast`` in bfloat16 or
float16; None runs everything in the model's own dtype.
"""

from __future__ import annotations

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: object, name: str = "amp") -> str | None:
    """amp: None, "bf16" or "fp16"; returned as it is."""
    if amp is not None and amp not in AMP_DTYPES:
        raise ValueError(f"{name} must be one of {', '.join(AMP_DTYPES)} or None, got {amp!r}")
    return amp


def autocast(device_type: str, amp: str | None, cache: bool = True) -> torch.autocast:
    """``torch.autocast`` on ``device_type`` ("cpu", "cuda") in the dtype ``amp`` names; disabled for None.
    ``cache=False`` casts the weights afresh in every forward (what a CUDA graph replays)."""
    dtype = AMP_DTYPES.get(check_amp(amp))
    return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None, cache_enabled=cache)
