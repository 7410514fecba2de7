"""Launching under the device of the tensors: every Triton launch runs inside ``with on_device(t):``."""

import contextlib

import torch


def on_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """torch.cuda.device(t.device) for a CUDA tensor (Triton launches on the current device), else nothing."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
