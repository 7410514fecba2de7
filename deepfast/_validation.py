"""Argument checks shared by the whole package (ops, layers, losses, attacks, defenses): each error names
the argument at fault. Internal: imported by deepfast's modules, not part of the public API."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

HALF_TYPES = (torch.float16, torch.bfloat16)


def check_float(t: object, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def check_like(t: object, name: str, ref: torch.Tensor, ref_name: str) -> None:
    """``t`` must be a tensor with the shape, dtype and device of ``ref``."""
    check_float(t, name)
    if t.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(t.shape)}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{name} must be on the device of {ref_name} ({ref.device}), got {t.device}")


def check_choice(value: object, name: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_finite_float(value: object, name: str, minimum: float | None = None) -> float:
    """``value`` must be a finite Python number (a float; an int does too), >= ``minimum`` when given;
    returned as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a Python float, got {type(value).__name__}")
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" and >= {minimum:g}"
        raise ValueError(f"{name} must be finite{bound}, got {value}")
    return float(value)


def acc_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the kernels and the references compute in for x: float64 for float64, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def in_float32(
    fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]], *tensors: torch.Tensor, **kwargs
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Run ``fn`` with float16/bfloat16 tensors upcast to float32 and cast its output (a tensor or a tuple) back."""
    dtype = tensors[0].dtype
    if dtype not in HALF_TYPES:
        return fn(*tensors, **kwargs)
    out = fn(*(t.float() for t in tensors), **kwargs)
    return out.to(dtype) if isinstance(out, torch.Tensor) else tuple(o.to(dtype) for o in out)


ValueRange = tuple[float, float]


def check_value_range(value_range: ValueRange) -> ValueRange:
    """Returns ``value_range`` as two floats after checking that it is (lo, hi), finite, lo < hi."""
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"value_range must be a pair (lo, hi) such as (0, 1) or (-1, 1), got {value_range!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range must be finite with lo < hi, got {value_range!r}")
    return lo, hi
