"""Fake kernels and autograd of the ops that have compiled (cpp/cuda) and Triton implementations.

Each such op ``name`` is a pair of dispatcher ops, ``<namespace>::name`` and ``<namespace>::name_backward``,
in two namespaces: ``deepfast`` (csrc/, present when deepfast._C loaded) and ``deepfast_triton``
(custom ops around the kernels of deepfast.kernels). Both share one fake kernel per op and one
autograd formula, which calls the backward op of its own namespace.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from deepfast import backends


def register_op_pair(
    name: str,
    *,
    fake: Callable,
    fake_backward: Callable,
    setup_context: Callable,
    backward: Callable,
) -> None:
    """Register the fake kernels of ``name`` and ``name_backward`` and the autograd formula of ``name``.

    ``backward(ctx, backward_op, *grads)`` returns the gradients of the inputs of ``name``, computed
    with ``backward_op``, the ``name_backward`` op of the same namespace.
    """
    for namespace in ["deepfast_triton"] + (["deepfast"] if backends.extension is not None else []):
        backward_op = getattr(getattr(torch.ops, namespace), f"{name}_backward")

        def grad(ctx, *grads, backward_op=backward_op):
            return backward(ctx, backward_op, *grads)

        torch.library.register_fake(f"{namespace}::{name}")(fake)
        torch.library.register_fake(f"{namespace}::{name}_backward")(fake_backward)
        torch.library.register_autograd(f"{namespace}::{name}", grad, setup_context=setup_context)
