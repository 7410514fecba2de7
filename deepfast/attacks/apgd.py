"""APGD (Croce & Hein 2020): PGD with momentum and a per-sample step size that halves when the loss stops
rising, so that it needs no step size; with the DLR loss, which does not depend on the scale of the
logits. The white-box half of AutoAttack.

Per sample, with P the projection onto the eps ball around x0 and the box [0, 1], ``dir(g)`` sign(g)
(Linf) or g / ||g|| (L2), f the loss, eta_0 = alpha (default 2 eps) and checkpoints w_j::

    x_1     = P(x_0 + eta dir(grad f(x_0)))
    z_k+1   = P(x_k + eta dir(grad f(x_k)))
    x_k+1   = P(x_k + 0.75 (z_k+1 - x_k) + 0.25 (x_k - x_k-1))
    x_max, f_max: the iterate of the highest loss so far

At each checkpoint w_j the step halves, and the sample restarts from x_max, if the loss rose in fewer
than rho = 75% of the steps since w_j-1, or if neither eta nor f_max changed since w_j-1. Checkpoints:
p_0 = 0, p_1 = 0.22, p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06) while <= 1, w_j = ceil(p_j * steps).

Losses: "ce" (cross-entropy to the label; minus that to the target when targeted) and, untargeted
only, "dlr": -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), z sorted as z_pi1 >= z_pi2 >= ...
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deepfast.attacks.base import check_eps, check_positive_int
from deepfast.attacks.pgd import PGD
from deepfast.ops import pgd_random_start, pgd_step_
from deepfast.ops._checks import check_choice

LOSSES = ("ce", "dlr")


def checkpoints(steps: int) -> list[int]:
    """The iterations w_j at which APGD may halve its step: [0, 22, 41, 57, 70, 80, 87, 93, 99] for 100."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps - 1e-9) for q in p})


def dlr_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The difference of logits ratio per sample (N,): -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12),
    for logits (N, K >= 3) and labels (N,): in [-1, 0] while the label has the largest logit, > 0 once
    another class has; unchanged when the logits are scaled or shifted."""
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    other = torch.where(top[:, 0] == z_y, top[:, 1], top[:, 0])  # the largest logit of another class
    return -(z_y - other) / (top[:, 0] - top[:, 2] + 1e-12)


class APGD(PGD):
    """APGD: ``adv = APGD(model, eps=8/255, steps=100, loss="ce")(images, labels)``.

    Args:
        eps: radius of the ball (Linf or L2), >= 0.
        steps: gradient evaluations after the start, >= 1 (the paper: 100).
        norm: "inf" or "2".
        loss: "ce" or "dlr" (untargeted only; needs K >= 3 classes).
        alpha: the first step size eta_0, None: 2 * eps.
        rho: the share of steps since the last checkpoint in which the loss must have risen for the
            step to stay, in [0, 1].
        random_start, restarts, target, normalization, seed, amp: as ``PGD``'s.

    Every sample takes every step (one forward and backward of the batch per step). Each sample's
    result is the first iterate that fooled the model (untargeted) or reached the target, else its
    iterate of the highest loss.
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 100, norm: str = "inf", *,
                 loss: str = "ce", alpha: float | None = None, rho: float = 0.75, **kwargs) -> None:
        for key in ("early_stop", "momentum", "cuda_graph"):
            if key in kwargs:
                raise TypeError(f"APGD does not take {key} (it has its own momentum and keeps every sample)")
        alpha = 2 * check_eps(eps) if alpha is None else alpha
        super().__init__(model, eps, alpha, check_positive_int(steps, "steps"), norm=norm, early_stop=False, **kwargs)
        check_choice(loss, "loss", LOSSES)
        if loss == "dlr" and self.target is not None:
            raise ValueError('loss="dlr" is untargeted (the targeted DLR needs both labels and targets); use loss="ce"')
        self.loss_name = loss
        self.rho = check_eps(rho, "rho")
        if self.rho > 1:
            raise ValueError(f"rho must be in [0, 1], got {rho}")

    def __repr__(self) -> str:
        return (f"APGD(eps={self.eps:.4g}, steps={self.steps}, norm={self.norm!r}, loss={self.loss_name!r}, "
                f"alpha={self.alpha:.4g}, rho={self.rho}, restarts={self.restarts}, target={self.target!r})")

    def _evaluate(self, x: Tensor, goal: Tensor, targeted: bool) -> tuple[Tensor, Tensor, Tensor]:
        """(per-sample losses (N,) in float32/64, their gradient with respect to x, success (N,) bool) at x."""
        x.requires_grad_(True)
        try:
            logits = self.logits(x)
            if self.loss_name == "dlr":
                if logits.shape[1] < 3:
                    raise ValueError(f'loss="dlr" needs a model of at least 3 classes, got {logits.shape[1]}')
                losses = dlr_loss(logits, goal)
            else:
                losses = F.cross_entropy(logits, goal, reduction="none")
                losses = -losses if targeted else losses
            (grad,) = torch.autograd.grad(losses.sum(), x)
        finally:
            x.requires_grad_(False)
        return losses.detach(), grad, self.succeeded(logits.detach(), goal, targeted)

    def _run(self, x0: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None) -> Tensor:
        n, acc = x0.shape[0], torch.float64 if x0.dtype == torch.float64 else torch.float32
        per_sample = (-1, *(1,) * (x0.dim() - 1))
        x = pgd_random_start(x0, self.eps, self.norm, generator=generator) if self.random_start else x0.clone()
        eta = torch.full((n,), self.alpha, dtype=acc, device=x0.device)
        loss, grad, fooled = self._evaluate(x, goal, targeted)
        adv = x  # the first fooling iterate (where ``fooled``)
        x_best, grad_best, loss_best = x, grad, loss
        ckpts, last = checkpoints(self.steps)[1:], 0
        rises = torch.zeros(n, dtype=torch.int64, device=x0.device)
        eta_last, loss_best_last, x_prev = eta, loss_best, x  # (tensors are replaced below, never written)
        for k in range(1, self.steps + 1):
            # the step from x_k-1 to x_k: z = P(x + eta dir(g)), then momentum (none on the first step)
            z = x.clone()
            pgd_step_(z, grad, x0, step_size=eta, eps=self.eps, norm=self.norm)
            if k == 1:
                x_new = z
            else:
                x_new = x + 0.75 * (z - x) + 0.25 * (x - x_prev)
                pgd_step_(x_new, grad, x0, step_size=0.0, eps=self.eps, norm=self.norm)  # step 0: P alone
            x_prev, x = x, x_new
            loss_new, grad, now_fooled = self._evaluate(x, goal, targeted)
            adv = torch.where((now_fooled & ~fooled).view(per_sample), x, adv)
            fooled |= now_fooled
            rises += loss_new > loss
            loss = loss_new
            better = loss > loss_best  # masks with torch.where: no device read-back in the loop
            x_best = torch.where(better.view(per_sample), x, x_best)
            grad_best = torch.where(better.view(per_sample), grad, grad_best)
            loss_best = torch.where(better, loss, loss_best)
            if k in ckpts:
                halve = (rises < self.rho * (k - last)) | ((eta == eta_last) & (loss_best == loss_best_last))
                eta_last, loss_best_last = eta, loss_best
                eta = torch.where(halve, eta / 2, eta)
                x = torch.where(halve.view(per_sample), x_best, x)  # restart from the best point, no momentum
                grad = torch.where(halve.view(per_sample), grad_best, grad)
                x_prev = torch.where(halve.view(per_sample), x, x_prev)
                loss = torch.where(halve, loss_best, loss)
                rises.zero_()
                last = k
        return torch.where(fooled.view(per_sample), adv, x_best)


class APGDDLR(APGD):
    """APGD with the DLR loss (``APGD(..., loss="dlr")``), untargeted: AutoAttack's second white-box attack."""

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 100, norm: str = "inf", **kwargs) -> None:
        super().__init__(model, eps, steps, norm, loss="dlr", **kwargs)
