"""Argument checks shared by the ops: each error names the argument at fault."""

from __future__ import annotations

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


def in_float32(fn: Callable[..., tuple[torch.Tensor, ...]], *tensors: torch.Tensor, **kwargs) -> tuple:
    """Run ``fn`` with float16/bfloat16 tensors upcast to float32 and cast its outputs back."""
    dtype = tensors[0].dtype
    if dtype not in HALF_TYPES:
        return fn(*tensors, **kwargs)
    return tuple(out.to(dtype) for out in fn(*(t.float() for t in tensors), **kwargs))
