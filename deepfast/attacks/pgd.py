"""Projected gradient descent (Madry et al. 2018) in the Linf and L2 balls, with random restarts, early
stop per sample and momentum (MI-FGSM, Dong et al. 2018); BIM (Kurakin et al. 2017) is PGD without the
random start.

Each step, per sample, with g the gradient of the loss (cross-entropy to the label, or minus that to
the target) with respect to the input and ``deepfast.ops.pgd_step_`` doing the update in place::

    Linf:  x <- clip(min(max(x + alpha * sign(g), x0 - eps), x0 + eps), 0, 1)
    L2:    x <- clip(x0 + P_eps(x + alpha * g / ||g||_2 - x0), 0, 1),   P_eps: scale into the eps ball

With momentum mu > 0, g is replaced by m <- mu * m + g / mean|g| (per sample) before the step.
"""

from __future__ import annotations

from itertools import chain
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deepfast._validation import check_choice, check_finite_float
from deepfast.attacks.base import Attack, Normalization, check_positive_int
from deepfast.attacks.graphed import StaticRun
from deepfast.attacks.step import step_
from deepfast.attacks.targets import Target
from deepfast.ops import pgd_random_start
from deepfast.ops.pgd_step import NORMS


class PGD(Attack):
    """PGD: ``adv = PGD(model, eps=8/255, alpha=2/255, steps=10)(images, labels)``.

    Args:
        eps: radius of the ball around each image (Linf or L2, in [0, 1] pixel space), >= 0.
        alpha: step size, >= 0; None: 2.5 * eps / steps.
        steps: gradient steps per restart, >= 1.
        random_start: start from a uniform random point of the ball (``deepfast.ops.pgd_random_start``)
            instead of the image itself.
        norm: "inf" or "2".
        restarts: runs from independent random starts (needs random_start=True). Each restart runs on
            the samples no earlier run fooled; each sample keeps its worst case: the first adversarial
            example that fools the model, else the one of the highest loss.
        early_stop: a sample the model already gets wrong (untargeted) or assigns to the target
            (targeted) stops moving, and the batch that runs through the model shrinks. Its result is
            the first point found that fools the model. False: every sample takes every step, as in
            the textbook loop and in torchattacks (whose PGD has no early stop and returns the last
            iterate, which can be classified correctly again after an earlier step fooled the model).
            Use early stop (the default) to measure robust accuracy: it is never higher than without
            (a sample fooled at any step counts as fooled) and it is faster. Use early_stop=False for
            examples of maximal loss: adversarial training (``deepfast.defenses``), transfer attacks,
            detector training.
        momentum: decay mu of MI-FGSM's gradient accumulation; 0: plain PGD.
        cuda_graph: run the steps as replays of a CUDA graph (``deepfast.attacks.graphed``; the model
            must be on a CUDA device, and its forward must not read values back to the host or change
            with the data). Captured on the first call for each batch shape and kept by the attack
            (with its buffers) for the next calls of that shape; captured again when the shape,
            the settings or the model's tensors (a ``.to()``, new parameters) change. Early stop masks
            fooled samples instead of shrinking the batch: the same results, each step costs the
            whole batch. Combine with ``amp="bf16"``. Not for subclasses with ``supports_cuda_graph = False``.
        target, normalization, seed, amp: see ``Attack``.

    One forward and one backward of the model per step on the samples still moving, one extra forward
    per restart when restarts > 1; the update is the fused in-place step, no tensor of the batch's size
    allocated by it. The loss is summed over the batch, so a sample's steps do not depend on the others.
    """

    # A subclass whose ``objective`` reads more than the batch (random transforms, state set per call)
    # sets this False: a replayed CUDA graph would not see that state, so cuda_graph=True is refused.
    supports_cuda_graph: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float | None = None,
        steps: int = 10,
        random_start: bool = True,
        norm: str = "inf",
        *,
        restarts: int = 1,
        early_stop: bool = True,
        momentum: float = 0.0,
        cuda_graph: bool = False,
        target: Target = None,
        normalization: Normalization | None = None,
        seed: int | None = None,
        amp: str | None = None,
    ) -> None:
        super().__init__(model, eps=eps, target=target, normalization=normalization, seed=seed, amp=amp)
        self.steps = check_positive_int(steps, "steps")
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else check_finite_float(alpha, "alpha", minimum=0)
        check_choice(norm, "norm", NORMS)
        self.norm = norm
        self.random_start = bool(random_start)
        self.restarts = check_positive_int(restarts, "restarts")
        if self.restarts > 1 and not self.random_start:
            raise ValueError("restarts > 1 needs random_start=True (restarts from the image itself are all the same)")
        self.early_stop = bool(early_stop)
        self.momentum = check_finite_float(momentum, "momentum", minimum=0)
        self.cuda_graph = bool(cuda_graph)
        if self.cuda_graph and not self.supports_cuda_graph:
            raise ValueError(
                f"cuda_graph=True is not supported by {self.name}: its objective depends on more than "
                "the batch (random transforms or state set per call), which a replayed graph would not see"
            )
        self._graphed: tuple[tuple, StaticRun] | None = None  # (key, run) of the last captured graph

    def __repr__(self) -> str:
        return (
            f"{self.name}(eps={self.eps:.4g}, alpha={self.alpha:.4g}, steps={self.steps}, norm={self.norm!r}, "
            f"random_start={self.random_start}, restarts={self.restarts}, early_stop={self.early_stop}, "
            f"momentum={self.momentum:.4g}, cuda_graph={self.cuda_graph}, amp={self.amp!r}, target={self.target!r})"
        )

    def objective(
        self, x: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """(logits (N, K) that decide whether each sample has succeeded, the loss to increase) at x."""
        logits = self.logits(x)
        return logits, self.loss(logits, goal, targeted)

    def gradient(
        self, x: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(grad, logits): the gradient of the objective's loss with respect to x (N, ...) only, and its
        logits (N, K), detached. x must not require grad; it is left so."""
        x.requires_grad_(True)
        try:
            logits, loss = self.objective(x, goal, targeted, generator)
            (grad,) = torch.autograd.grad(loss, x)
        finally:
            x.requires_grad_(False)
        return grad, logits.detach()

    def _attack(self, x: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None) -> Tensor:
        if self.restarts == 1:
            return self._run(x, goal, targeted, generator)
        best = x.clone()
        best_loss = torch.full((x.shape[0],), -torch.inf, dtype=torch.float64, device=x.device)
        todo = torch.arange(x.shape[0], device=x.device)  # samples no restart has fooled yet
        for _ in range(self.restarts):
            adv = self._run(x[todo], goal[todo], targeted, generator)
            with torch.no_grad():
                logits = self.logits(adv)
            loss = self.loss(logits, goal[todo], targeted, reduction="none")
            fooled = self.succeeded(logits, goal[todo], targeted)
            better = fooled | (loss > best_loss[todo])
            best[todo[better]] = adv[better]
            best_loss[todo[better]] = loss[better].to(best_loss.dtype)
            todo = todo[~fooled]
            if todo.numel() == 0:
                break
        return best

    def _run(self, x0: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None) -> Tensor:
        """One run of ``steps`` steps from a (random) start; returns the adversarial examples (N, ...).

        With early stop the samples still moving are kept packed in ``xa`` (``index`` their rows in
        ``out``); the others' rows are written to ``out`` when they stop, so tensors are only
        re-packed when the batch shrinks."""
        xa = pgd_random_start(x0, self.eps, self.norm, generator=generator) if self.random_start else x0.clone()
        if self.cuda_graph:
            run = self._static_run(x0, goal, targeted, xa)
            run.load(x0, goal, xa)
            return run.run(self.steps)
        out, index, m = xa, None, None
        for _ in range(self.steps):
            grad, logits = self.gradient(xa, goal, targeted, generator)
            if self.early_stop:
                done = self.succeeded(logits, goal, targeted)
                if bool(done.any()):
                    keep = ~done
                    if index is None:
                        index = keep.nonzero().squeeze(1)
                    else:
                        out.index_copy_(0, index[done], xa[done])
                        index = index[keep]
                    xa, x0, goal, grad = xa[keep], x0[keep], goal[keep], grad[keep]
                    m = None if m is None else m[keep]
                    if index.numel() == 0:
                        return out
            m = step_(self, xa, grad, x0, m)
        if index is not None:
            out.index_copy_(0, index, xa)
        return out

    def _static_run(self, x0: Tensor, goal: Tensor, targeted: bool, start: Tensor) -> StaticRun:
        """The captured run for this batch shape, settings and model tensors (captured now if the last
        one was for others: its graph and buffers are freed first)."""
        if x0.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the model on a CUDA device, got {x0.device}")
        tensors = chain(self.model.parameters(), self.model.buffers())
        key = (
            x0.shape,
            x0.dtype,
            x0.device,
            targeted,
            self.eps,
            self.alpha,
            self.norm,
            self.momentum,
            self.early_stop,
            self.amp,
            tuple(t.data_ptr() for t in tensors),
        )
        if self._graphed is None or self._graphed[0] != key:
            self._graphed = None
            run = StaticRun(self, x0, goal, targeted)
            run.load(x0, goal, start)
            run.capture()
            self._graphed = (key, run)
        return self._graphed[1]


def pgd_reference(
    model: nn.Module,
    x0: Tensor,
    labels: Tensor,
    eps: float,
    alpha: float,
    steps: int,
    norm: str = "inf",
    momentum: float = 0.0,
    start: Tensor | None = None,
) -> Tensor:
    """The textbook PGD loop in plain torch, the spec of ``PGD`` (untargeted, no early stop): from
    ``start`` (default x0), ``steps`` times, with g the gradient of the cross-entropy summed over the
    batch (and m <- momentum * m + g / mean|g| when momentum > 0)::

        Linf: x = clamp(min(max(x + alpha * sign(g), x0 - eps), x0 + eps), 0, 1)
        L2:   x = x + alpha * g / (||g|| + 1e-10);  d = x - x0;  x = clamp(x0 + d * min(eps / ||d||, 1), 0, 1)

    Allocates new tensors every step; the model runs as it is (its mode is not changed)."""
    x = (x0 if start is None else start).clone()
    m = torch.zeros_like(x0)
    per_sample = (-1, *(1,) * (x0.dim() - 1))
    for _ in range(steps):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), labels, reduction="sum"), x)
        x = x.detach()
        if momentum > 0:
            m = momentum * m + g / g.abs().mean(dim=tuple(range(1, g.dim())), keepdim=True)
            g = m
        if norm == "inf":
            x = torch.clamp(torch.min(torch.max(x + alpha * g.sign(), x0 - eps), x0 + eps), 0, 1)
        else:
            x = x + alpha * g / (g.flatten(1).norm(dim=1).view(per_sample) + 1e-10)
            d = x - x0
            d_norm = d.flatten(1).norm(dim=1).view(per_sample)
            x = torch.clamp(x0 + d * torch.where(d_norm > eps, eps / d_norm, 1.0), 0, 1)
    return x


class BIM(PGD):
    """The basic iterative method (Kurakin et al. 2017): PGD from the image itself (random_start=False)."""

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float | None = None,
        steps: int = 10,
        norm: str = "inf",
        **kwargs,
    ) -> None:
        super().__init__(model, eps, alpha, steps, random_start=False, norm=norm, **kwargs)


class MIFGSM(PGD):
    """Momentum iterative FGSM (Dong et al. 2018): BIM with momentum, mu = 1.0 and alpha = eps / steps by
    default: m <- mu * m + g / mean|g|, x <- step along sign(m) (Linf) or m / ||m|| (L2)."""

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: float | None = None,
        steps: int = 10,
        momentum: float = 1.0,
        norm: str = "inf",
        **kwargs,
    ) -> None:
        alpha = (
            check_finite_float(eps, "eps", minimum=0) / check_positive_int(steps, "steps") if alpha is None else alpha
        )
        super().__init__(model, eps, alpha, steps, random_start=False, norm=norm, momentum=momentum, **kwargs)
