"""Fake kernels and autograd of the ops that have compiled (cpp/cuda) and Triton implementations.

Each such op is a pair of dispatcher ops, ``name`` and a second one (its backward ``name_backward``,
or an in-place variant), in two namespaces: ``deepfast`` (csrc/, present when deepfast._C loaded) and
``deepfast_triton`` (custom ops around the kernels of deepfast.kernels). Both namespaces share one fake
kernel per op and, where the second op is the backward, one autograd formula, which calls the backward
op of its own namespace.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from deepfast import backends


def register_op_pair(
    name: str,
    second: str,
    *,
    fakes: tuple[Callable, Callable],
    autograd: tuple[Callable, Callable] | None = None,
) -> None:
    """Register the fake kernels ``fakes`` of ops ``name`` and ``second`` in both namespaces and, with
    ``autograd = (setup_context, backward)``, the autograd formula of ``name``: ``second`` is then its
    backward op, and ``backward(ctx, backward_op, *grads)`` returns the gradients of the inputs of
    ``name``, computed with ``backward_op``, the ``second`` op of the same namespace.
    """
    for namespace in ["deepfast_triton"] + (["deepfast"] if backends.extension is not None else []):
        for op, fake in zip((name, second), fakes):
            torch.library.register_fake(f"{namespace}::{op}")(fake)
        if autograd is None:
            continue
        setup_context, backward = autograd
        backward_op = getattr(getattr(torch.ops, namespace), second)

        def grad(ctx, *grads, backward_op=backward_op):
            return backward(ctx, backward_op, *grads)

        torch.library.register_autograd(f"{namespace}::{name}", grad, setup_context=setup_context)
