"""CycleConsistencyLoss: the cycle and identity terms of the CycleGAN generator loss, on cycle_l1."""

from __future__ import annotations

import functools
import operator

from torch import Tensor, nn

from deepfast._validation import check_finite_float
from deepfast.ops.cycle_l1 import cycle_l1


class CycleConsistencyLoss(nn.Module):
    """Cycle-consistency and identity L1 terms of CycleGAN (Zhu et al., 2017), both directions.

    With G_A: A -> B and G_B: B -> A, rec_a = G_B(G_A(real_a)), rec_b = G_A(G_B(real_b)),
    idt_a = G_A(real_b) and idt_b = G_B(real_a), the loss is the sum of

        cycle_a = lambda_a * mean|rec_a - real_a|
        cycle_b = lambda_b * mean|rec_b - real_b|
        idt_a   = lambda_b * lambda_identity * mean|idt_a - real_b|
        idt_b   = lambda_a * lambda_identity * mean|idt_b - real_a|

    as in the reference code (junyanz/pytorch-CycleGAN-and-pix2pix), where each is an nn.L1Loss.
    The identity terms are left out when lambda_identity <= 0 (as there) or their tensor is None.
    Each term is one fused deepfast.ops.cycle_l1 call; ``terms`` holds the detached terms of the
    last call (0-dim tensors, keys "cycle_a", "cycle_b", and "idt_a", "idt_b" when computed), for
    logging.

    Shapes: real_a, rec_a, idt_b of one shape (N, C, H, W) (any shape works); real_b, rec_b, idt_a of
    another. Returns the 0-dim total, of the inputs' dtype.
    """

    terms: dict[str, Tensor]

    def __init__(self, lambda_a: float = 10.0, lambda_b: float = 10.0, lambda_identity: float = 0.5) -> None:
        super().__init__()
        for value, name in ((lambda_a, "lambda_a"), (lambda_b, "lambda_b"), (lambda_identity, "lambda_identity")):
            check_finite_float(value, name)
        self.lambda_a, self.lambda_b, self.lambda_identity = lambda_a, lambda_b, lambda_identity
        self.terms = {}

    def forward(
        self,
        real_a: Tensor,
        real_b: Tensor,
        rec_a: Tensor,
        rec_b: Tensor,
        idt_a: Tensor | None = None,
        idt_b: Tensor | None = None,
    ) -> Tensor:
        terms = {
            "cycle_a": cycle_l1(rec_a, real_a, weight=self.lambda_a),
            "cycle_b": cycle_l1(rec_b, real_b, weight=self.lambda_b),
        }
        if self.lambda_identity > 0:
            if idt_a is not None:
                terms["idt_a"] = cycle_l1(idt_a, real_b, weight=self.lambda_b * self.lambda_identity)
            if idt_b is not None:
                terms["idt_b"] = cycle_l1(idt_b, real_a, weight=self.lambda_a * self.lambda_identity)
        self.terms = {name: term.detach() for name, term in terms.items()}
        return functools.reduce(operator.add, terms.values())

    def extra_repr(self) -> str:
        return f"lambda_a={self.lambda_a}, lambda_b={self.lambda_b}, lambda_identity={self.lambda_identity}"
