"""APGD (Croce & Hein 2020): PGD with momentum and a per-sample step size that halves when the loss stops
rising, so that it needs no step size; with the DLR loss, which does not depend on the scale of the
logits. The white-box half of AutoAttack.

Per sample, with P the projection onto the eps ball around x0 and the box [0, 1], ``dir(g)`` sign(g)
(Linf) or g / ||g|| (L2), f the loss, eta_0 = alpha (default 2 eps) and checkpoints w_j::

    x_1     = P(x_0 + eta dir(grad f(x_0)))
    z_k+1   = P(x_k + eta dir(grad f(x_k)))
    x_k+1   = P(x_k + 0.75 (z_k+1 - x_k) + 0.25 (x_k - x_k-1))
    x_max, f_max: the iterate of the highest loss so far

At each checkpoint w_j the step halves, and the sample goes on from x_max (with the gradient there), if
the loss rose in at most rho = 75% of the steps since w_j-1, or if the step did not halve at w_j-1 and
f_max did not rise since. Checkpoints: the first after max(int(0.22 n), 1) of the n steps, then
periods shorter by max(int(0.03 n), 1) each, down to max(int(0.06 n), 1): 22, 41, 57, 70, 80, 87, 93, 99
for 100 steps (the paper's p_j = 0.22, 0.41, ...).

Where the reference implementation (auto-attack's autopgd_base, ported by torchattacks) and the paper's
text differ, this follows the implementation, which produced the published AutoAttack numbers: the
integer checkpoint schedule above (the paper's ceil(p_j n) differs for small n: 3, 5, 6, ... for 10
steps where the code checks at 2, 3, 4, ...); "at most" rho (the paper: fewer than); the second
condition never at the first checkpoint; the rises counted between consecutive iterates, the first
step's loss compared with 0 (the implementation's zero-filled loss history) and the first step after a
restart compared with the iterate it replaced; the momentum after a restart taken from the iterate
before. Where it still differs from the implementation: the random start (``deepfast.ops.pgd_random_start``,
uniform in the ball; the implementation scales a uniform cube draw so that its largest element is eps,
or a Gaussian to norm eps), the result of a fooled sample (its first fooling iterate; the implementation
keeps its last) and of one never fooled (its iterate of the highest loss; the implementation returns the
image), and rounding in the L2 step (``deepfast.ops.pgd_step_``'s 1e-10 where the implementation adds 1e-12).

Losses: "ce" (cross-entropy to the label; minus that to the target when targeted); "dlr", untargeted
only: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), z sorted as z_pi1 >= z_pi2 >= ...; and the
targeted DLR of APGD-T (``APGDT``): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deepfast._validation import check_choice, check_finite_float
from deepfast.attacks.base import check_positive_int
from deepfast.attacks.pgd import PGD
from deepfast.attacks.targets import other_classes, until_done
from deepfast.ops import pgd_random_start, pgd_step_

LOSSES = ("ce", "dlr")


def checkpoints(steps: int) -> list[int]:
    """The iterations w_j at which APGD may halve its step: [0, 22, 41, 57, 70, 80, 87, 93, 99] for 100."""
    period, shrink, least = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    w = [0]
    while w[-1] + period <= steps:
        w.append(w[-1] + period)
        period = max(period - shrink, least)
    return w


def dlr_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The difference of logits ratio per sample (N,): -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12),
    for logits (N, K >= 3) and labels (N,): in [-1, 0] while the label has the largest logit, > 0 once
    another class has; unchanged when the logits are scaled or shifted."""
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    other = torch.where(top[:, 0] == z_y, top[:, 1], top[:, 0])  # the largest logit of another class
    return -(z_y - other) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted_loss(logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """The targeted DLR loss of APGD-T per sample (N,): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12),
    for logits (N, K >= 4), labels y and targets t (N,); > 0 once the target's logit passes the label's."""
    top = logits.sort(dim=1, descending=True).values
    z_y, z_t = logits.gather(1, labels[:, None]).squeeze(1), logits.gather(1, targets[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)


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

    Every sample takes every step (one forward and backward of the batch per step): there is no early
    stop, since the step-size schedule of each sample depends on its whole loss history. Each sample's
    result is the first iterate that fooled the model (untargeted) or reached the target, else its
    iterate of the highest loss.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 100,
        norm: str = "inf",
        *,
        loss: str = "ce",
        alpha: float | None = None,
        rho: float = 0.75,
        **kwargs,
    ) -> None:
        for key in ("early_stop", "momentum", "cuda_graph"):
            if key in kwargs:
                raise TypeError(
                    f"{type(self).__name__} does not take {key} (it has its own momentum and keeps every sample)"
                )
        alpha = 2 * check_finite_float(eps, "eps", minimum=0) if alpha is None else alpha
        super().__init__(model, eps, alpha, check_positive_int(steps, "steps"), norm=norm, early_stop=False, **kwargs)
        check_choice(loss, "loss", LOSSES)
        if loss == "dlr" and self.target is not None:
            raise ValueError('loss="dlr" is untargeted (the targeted DLR needs both labels and targets); use loss="ce"')
        self.loss_name = loss
        self.rho = check_finite_float(rho, "rho", minimum=0)
        if self.rho > 1:
            raise ValueError(f"rho must be in [0, 1], got {rho}")

    def __repr__(self) -> str:
        return (
            f"{self.name}(eps={self.eps:.4g}, steps={self.steps}, norm={self.norm!r}, loss={self.loss_name!r}, "
            f"alpha={self.alpha:.4g}, rho={self.rho}, restarts={self.restarts}, target={self.target!r})"
        )

    def _losses(self, logits: Tensor, goal: Tensor, targeted: bool) -> Tensor:
        """The per-sample losses (N,) that the steps increase."""
        if self.loss_name == "dlr":
            if logits.shape[1] < 3:
                raise ValueError(f'loss="dlr" needs a model of at least 3 classes, got {logits.shape[1]}')
            return dlr_loss(logits, goal)
        losses = F.cross_entropy(logits, goal, reduction="none")
        return -losses if targeted else losses

    def _evaluate(
        self, x: Tensor, goal: Tensor, targeted: bool, losses_of: Callable[[Tensor], Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(per-sample losses (N,) in float32/64, their gradient with respect to x, success (N,) bool) at x."""
        x.requires_grad_(True)
        try:
            logits = self.logits(x)
            losses = losses_of(logits)
            (grad,) = torch.autograd.grad(losses.sum(), x)
        finally:
            x.requires_grad_(False)
        return losses.detach(), grad, self.succeeded(logits.detach(), goal, targeted)

    def _run(
        self,
        x0: Tensor,
        goal: Tensor,
        targeted: bool,
        generator: torch.Generator | None,
        losses_of: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """One run from a (random) start; ``losses_of(logits) -> (N,)`` replaces the loss (APGD-T's)."""
        if losses_of is None:

            def losses_of(logits: Tensor) -> Tensor:
                return self._losses(logits, goal, targeted)

        n, acc = x0.shape[0], torch.float64 if x0.dtype == torch.float64 else torch.float32
        per_sample = (-1, *(1,) * (x0.dim() - 1))
        x = pgd_random_start(x0, self.eps, self.norm, generator=generator) if self.random_start else x0.clone()
        eta = torch.full((n,), self.alpha, dtype=acc, device=x0.device)
        loss_best, grad, fooled = self._evaluate(x, goal, targeted, losses_of)
        adv = x  # the first fooling iterate (where ``fooled``)
        x_best, grad_best = x, grad
        loss = torch.zeros_like(loss_best)  # the loss of the last iterate, for the rises (0 before the first)
        ckpts, last = checkpoints(self.steps)[1:], 0
        rises = torch.zeros(n, dtype=torch.int64, device=x0.device)
        halved = torch.ones(n, dtype=torch.bool, device=x0.device)  # at the last checkpoint (none: as if so)
        loss_best_last, x_prev = loss_best, x  # (tensors are replaced below, never written)
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
            loss_new, grad, now_fooled = self._evaluate(x, goal, targeted, losses_of)
            adv = torch.where((now_fooled & ~fooled).view(per_sample), x, adv)
            fooled |= now_fooled
            rises += loss_new > loss
            loss = loss_new
            better = loss > loss_best  # masks with torch.where: no device read-back in the loop
            x_best = torch.where(better.view(per_sample), x, x_best)
            grad_best = torch.where(better.view(per_sample), grad, grad_best)
            loss_best = torch.where(better, loss, loss_best)
            if k in ckpts:
                halved = (rises <= self.rho * (k - last)) | (~halved & (loss_best <= loss_best_last))
                loss_best_last = loss_best
                eta = torch.where(halved, eta / 2, eta)
                x = torch.where(halved.view(per_sample), x_best, x)  # on from the best point
                grad = torch.where(halved.view(per_sample), grad_best, grad)
                rises.zero_()
                last = k
        return torch.where(fooled.view(per_sample), adv, x_best)


class APGDDLR(APGD):
    """APGD with the DLR loss (``APGD(..., loss="dlr")``), untargeted: AutoAttack's second white-box attack."""

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 100, norm: str = "inf", **kwargs) -> None:
        super().__init__(model, eps, steps, norm, loss="dlr", **kwargs)


class APGDT(APGD):
    """APGD-T, AutoAttack's second attack: ``adv = APGDT(model, eps=8/255, steps=100, targets=9)(images, labels)``.

    Untargeted as a whole: for each of the ``targets`` classes of highest clean logit other than the
    label in turn (the paper: 9), APGD with the targeted DLR loss towards that class runs on the samples
    no earlier run fooled (``restarts`` runs per class). A sample is fooled when it is misclassified (as
    any class). Its result is its first fooling iterate, else the last run's iterate of the highest loss.
    Needs K >= 4 classes; with K - 1 < targets, the K - 1 other classes. Other arguments as ``APGD``'s.
    """

    def __init__(
        self, model: nn.Module, eps: float = 8 / 255, steps: int = 100, norm: str = "inf", *, targets: int = 9, **kwargs
    ) -> None:
        if "loss" in kwargs or "target" in kwargs:
            raise TypeError(
                "APGDT takes no loss or target (its loss is the targeted DLR, towards each of `targets` classes)"
            )
        super().__init__(model, eps, steps, norm, **kwargs)
        self.loss_name = "dlr-targeted"
        self.targets = check_positive_int(targets, "targets")

    def _attack(self, x: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None) -> Tensor:
        logits = self._clean_logits(x)
        if logits.shape[1] < 4:
            raise ValueError(
                f"APGDT (the targeted DLR loss) needs a model of at least 4 classes, got {logits.shape[1]}"
            )

        def run(idx: Tensor, aims: Tensor, restart: int) -> tuple[Tensor, Tensor]:
            y = goal[idx]
            adv = self._run(x[idx], y, False, generator, lambda z: dlr_targeted_loss(z, y, aims))
            with torch.no_grad():
                return adv, self.succeeded(self.logits(adv), y, False)

        done = self.succeeded(logits, goal, False)
        return until_done(x, done, other_classes(logits, goal, self.targets), self.restarts, run)
