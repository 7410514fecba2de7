"""FAB, the fast adaptive boundary attack (Croce & Hein 2020, "Minimally distorted adversarial examples
with a fast adaptive boundary attack"): a minimal-norm white-box attack in Linf or L2; FAB-T, its
multi-target form, is AutoAttack's third attack.

Per sample, from x = x0 (later restarts: a random point at distance eps / 2), each step linearizes at x
the boundary between the label y and one class j: the hyperplane
{z : f_j(x) - f_y(x) + <g, z - x> = 0}, g = grad(f_j - f_y)(x). Untargeted FAB takes the class j whose
linearized boundary is nearest, |f_j - f_y| / ||g||_q (q = 1 for Linf, 2 for L2: K backward passes per
step); FAB-T (``targets=k``) the class it aims at (one backward). With d1, d2 the smallest steps (in the
attack's norm, ``boundary_step``) that take x and x0 onto that hyperplane inside the box [0, 1]::

    a = min(||d1|| / (||d1|| + ||d2||), alpha_max)             (norms clamped below at 1e-8)
    x <- clip((1 - a)(x + eta d1) + a (x0 + eta d2), 0, 1)      (eta > 1 overshoots the boundary)
    if the model misclassifies x:  keep x if ||x - x0|| is the smallest so far;  x <- x0 + beta (x - x0)

A sample succeeds when the smallest perturbation found has norm <= eps. Defaults are the paper's:
alpha_max 0.1, eta 1.05, beta 0.9, 100 steps; AutoAttack runs FAB-T over the 9 most likely other classes.

Where results may differ from the reference implementation (auto-attack's fab_pt, ported by
torchattacks): the projection onto the hyperplane and the box is computed exactly here by sorting the
coordinates' break points once (the reference sorts, then bisects over them), so the two agree up to
rounding, which can send a trajectory another way after many steps; with early stop (the default) a
sample stops once it has a perturbation of norm <= eps (its outcome is decided; the reference keeps
shrinking the norm, as ``early_stop=False`` does); the random start of restarts draws from the attack's
generator; deepfast's targeted mode (``target=``) linearizes towards the target against the largest
other logit, a form the reference does not have.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfast._validation import check_choice, check_finite_float
from deepfast.attacks.base import Attack, Normalization, check_positive_int
from deepfast.attacks.targets import Target, other_classes, until_done
from deepfast.ops.pgd_step import NORMS


def boundary_step(p: Tensor, w: Tensor, b: Tensor, norm: str) -> Tensor:
    """The smallest step delta (M, D), in the Lp norm ``norm`` ("inf" or "2"), that takes each point p
    (M, D) of the box [0, 1]^D onto the hyperplane <w, p + delta> = b (w (M, D), b (M,)) with p + delta in
    the box; where the box does not reach the hyperplane, the step to the box's corner nearest to it.

    With r = b - <w, p> and v = sign(r) w, the step is delta_i = sign(v_i) min(tau c_i, room_i), room_i
    the distance from p_i to the box's side in the direction of v_i, c_i = |v_i| (L2: the clipped
    multiple of w that the KKT conditions give) or 1 where v_i != 0 (Linf: every coordinate moved by tau,
    the Linf norm); tau solves h(tau) = sum_i |v_i| min(tau c_i, room_i) = |r|, a piecewise-linear
    increasing function, exactly: its break points room_i / c_i sorted once, h at each by cumulative
    sums, tau interpolated in the segment where h passes |r|. Coordinates with w_i = 0 do not move.
    """
    r = b - (w * p).sum(dim=1)
    v = torch.sign(r)[:, None] * w
    a = v.abs()
    room = torch.where(v > 0, 1 - p, p)
    c = a if norm == "2" else (a > 0).to(a.dtype)
    breaks, order = torch.where(c > 0, room / c, torch.inf).sort(dim=1)
    a, room_s, c_s = a.gather(1, order), room.gather(1, order), c.gather(1, order)
    filled = (a * room_s).cumsum(dim=1)  # sum of |v_i| room_i over the coordinates saturated by break k
    rate = (a * c_s).sum(dim=1, keepdim=True) - (a * c_s).cumsum(dim=1)  # dh/dtau after break k
    h = filled + torch.where(rate > 0, breaks * rate, 0)  # h at break k
    need = r.abs()
    k = (h < need[:, None]).sum(dim=1, keepdim=True)  # breaks passed before h reaches |r|
    before = (k - 1).clamp_min(0)
    filled_k = torch.where(k > 0, filled.gather(1, before), 0)
    rate_k = torch.where(k > 0, rate.gather(1, before), (a * c_s).sum(dim=1, keepdim=True))
    tau = torch.where(rate_k > 0, (need[:, None] - filled_k) / rate_k, torch.inf)
    return torch.sign(v) * torch.where(c > 0, torch.minimum(tau * c, room), 0)


class FAB(Attack):
    """FAB: ``adv = FAB(model, eps=8/255, steps=100, norm="inf")(images, labels)``; FAB-T with ``targets=9``.

    Args:
        eps: the budget (Linf or L2, >= 0): each sample's result is the smallest adversarial example
            found if its norm is <= eps, else the image itself.
        steps: steps per run, >= 1 (the paper: 100).
        norm: "inf" or "2".
        targets: None (FAB: the nearest linearized boundary each step) or k (FAB-T: for each of the k
            classes of highest clean logit other than the label in turn, a run towards that class on the
            samples no earlier run fooled within eps; AutoAttack's k is 9). Untargeted either way: a
            sample is fooled when it is misclassified as any class.
        restarts: runs per class (FAB: runs), each on the samples not yet fooled within eps; every run
            after the first starts from a random point at distance eps / 2 from the image.
        alpha_max, eta, beta: the paper's step parameters (0.1, 1.05, 0.9).
        early_stop: a sample stops once it has an adversarial example of norm <= eps (the outcome is
            decided, the batch shrinks); False: every sample takes every step, shrinking its norm further
            (minimal-norm examples, as the reference implementation).
        target, normalization, seed, amp: see ``Attack``; with ``target`` (not with ``targets``) the
            attack is targeted: each step linearizes the boundary between the target and the largest
            other logit, and success is the target's prediction.

    Per step: one forward and backward (FAB: one forward and K backward passes) and one forward, on
    the samples still running. ``last_norms``: float (N,), the smallest norm found per sample in the last
    call (inf where none, 0 where the clean image is already misclassified).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 100,
        norm: str = "inf",
        *,
        targets: int | None = None,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        early_stop: bool = True,
        target: Target = None,
        normalization: Normalization | None = None,
        seed: int | None = None,
        amp: str | None = None,
    ) -> None:
        super().__init__(model, eps=eps, target=target, normalization=normalization, seed=seed, amp=amp)
        self.steps = check_positive_int(steps, "steps")
        check_choice(norm, "norm", NORMS)
        self.norm = norm
        self.targets = None if targets is None else check_positive_int(targets, "targets")
        if self.targets is not None and self.target is not None:
            raise ValueError(
                "FAB takes targets (FAB-T, untargeted over several classes) or target (targeted), not both"
            )
        self.restarts = check_positive_int(restarts, "restarts")
        self.alpha_max = check_finite_float(alpha_max, "alpha_max", minimum=0)
        if self.alpha_max > 1:
            raise ValueError(f"alpha_max must be in [0, 1], got {alpha_max}")
        self.eta = check_finite_float(eta, "eta", minimum=0)
        self.beta = check_finite_float(beta, "beta", minimum=0)
        if not 0 < self.beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        self.early_stop = bool(early_stop)
        self.last_norms: Tensor | None = None

    def __repr__(self) -> str:
        return (
            f"FAB(eps={self.eps:.4g}, steps={self.steps}, norm={self.norm!r}, targets={self.targets}, "
            f"restarts={self.restarts}, alpha_max={self.alpha_max}, eta={self.eta}, beta={self.beta}, "
            f"early_stop={self.early_stop}, target={self.target!r})"
        )

    def _norms(self, d: Tensor) -> Tensor:
        """The attack's norm of each row of d (M, D)."""
        return d.abs().amax(dim=1) if self.norm == "inf" else torch.linalg.vector_norm(d, dim=1)

    def _boundary(self, x: Tensor, goal: Tensor, targeted: bool, aims: Tensor | None) -> tuple[Tensor, Tensor]:
        """(f_j - f_ref at x (M,), its gradient (M, ...)): the linearized boundary of this step. ref is the
        label (untargeted; j the aimed class, else the nearest one) or, targeted, the largest logit other
        than the target j = goal."""
        x.requires_grad_(True)
        try:
            logits = self.logits(x)
            rows = torch.arange(x.shape[0], device=x.device)
            if targeted:
                ref = logits.detach().scatter(1, goal[:, None], -torch.inf).argmax(dim=1)
                diff = logits[rows, goal] - logits[rows, ref]
            elif aims is not None:
                diff = logits[rows, aims] - logits[rows, goal]
            else:
                return self._nearest_boundary(x, logits, goal)
            (grad,) = torch.autograd.grad(diff.sum(), x)
        finally:
            x.requires_grad_(False)
        return diff.detach().to(x.dtype), grad  # the logits may be the model's dtype; the iterate is x's

    def _nearest_boundary(self, x: Tensor, logits: Tensor, goal: Tensor) -> tuple[Tensor, Tensor]:
        """Untargeted FAB's choice: over the classes j != y, the linearized boundary nearest to x."""
        rows = torch.arange(x.shape[0], device=x.device)
        (grad_y,) = torch.autograd.grad(logits[rows, goal].sum(), x, retain_graph=True)
        best = torch.full((x.shape[0],), torch.inf, device=x.device)
        diff, grad = torch.zeros_like(best, dtype=x.dtype), torch.zeros_like(x)
        per_sample = (-1, *(1,) * (x.dim() - 1))
        for j in range(logits.shape[1]):
            (g,) = torch.autograd.grad(logits[:, j].sum(), x, retain_graph=j + 1 < logits.shape[1])
            g = g - grad_y
            d = (logits[:, j] - logits[rows, goal]).detach().to(x.dtype)
            dual = (
                g.flatten(1).abs().sum(dim=1) if self.norm == "inf" else torch.linalg.vector_norm(g.flatten(1), dim=1)
            )
            dist = torch.where(goal == j, torch.inf, d.abs() / (dual + 1e-12))
            nearer = dist < best
            best = torch.where(nearer, dist, best)
            diff = torch.where(nearer, d, diff)
            grad = torch.where(nearer.view(per_sample), g, grad)
        return diff, grad

    def _start(self, x0: Tensor, generator: torch.Generator | None) -> Tensor:
        """A random point at distance eps / 2 from each image (Linf: a uniform draw scaled to that
        largest element; L2: a Gaussian one scaled to that norm), clipped to the box."""
        if self.norm == "inf":
            t = 2 * torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype) - 1
        else:
            t = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        scale = self._norms(t.flatten(1)).clamp_min(1e-12).view(-1, *(1,) * (x0.dim() - 1))
        return (x0 + 0.5 * self.eps * t / scale).clamp(0, 1)

    def _run(
        self, x0: Tensor, goal: Tensor, targeted: bool, aims: Tensor | None, start: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """One run of ``steps`` steps from x0 (or ``start``): (the smallest adversarial examples found
        (M, ...), x0 where none; their norms (M,), inf where none)."""
        shape, flat0 = x0.shape, x0.flatten(1)
        best = torch.full((shape[0],), torch.inf, device=x0.device, dtype=x0.dtype)
        adv = flat0.clone()
        x = (flat0 if start is None else start.flatten(1)).clone()
        active = torch.arange(shape[0], device=x0.device)  # the samples still running
        for _ in range(self.steps):
            if active.numel() == 0:
                break
            xa, x0a, ga = x[active], flat0[active], goal[active]
            diff, grad = self._boundary(xa.view(-1, *shape[1:]), ga, targeted, None if aims is None else aims[active])
            w = grad.flatten(1)
            b = (w * xa).sum(dim=1) - diff
            d = boundary_step(torch.cat([xa, x0a]), torch.cat([w, w]), torch.cat([b, b]), self.norm)
            d1, d2 = d.split(xa.shape[0])
            n1, n2 = self._norms(d1).clamp_min(1e-8), self._norms(d2).clamp_min(1e-8)
            alpha = (n1 / (n1 + n2)).clamp(0, self.alpha_max)[:, None]
            xa = ((xa + self.eta * d1) * (1 - alpha) + (x0a + self.eta * d2) * alpha).clamp(0, 1)
            with torch.no_grad():
                hit = self.succeeded(self.logits(xa.view(-1, *shape[1:])), ga, targeted)
            size = self._norms(xa - x0a)
            better = hit & (size < best[active])
            adv[active] = torch.where(better[:, None], xa, adv[active])
            best[active] = torch.where(better, size, best[active])
            x[active] = torch.where(hit[:, None], x0a + self.beta * (xa - x0a), xa)
            if self.early_stop:
                active = active[best[active] > self.eps]
        return adv.view(shape), best

    def _attack(self, x: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None) -> Tensor:
        norms = torch.full((x.shape[0],), torch.inf, device=x.device, dtype=x.dtype)

        def run(idx: Tensor, aims: Tensor | None, restart: int) -> tuple[Tensor, Tensor]:
            start = self._start(x[idx], generator) if restart > 0 else None
            adv, found = self._run(x[idx], goal[idx], targeted, aims, start)
            norms[idx] = torch.minimum(norms[idx], found)
            done = found <= self.eps
            return torch.where(done.view(-1, *(1,) * (x.dim() - 1)), adv, x[idx]), done

        with torch.no_grad():
            logits = self.logits(x)
        done = self.succeeded(logits, goal, targeted)  # already misclassified (or at the target): norm 0
        norms[done] = 0
        aims = [None] if self.targets is None else other_classes(logits, goal, self.targets)
        adv = until_done(x, done, aims, self.restarts, run)
        self.last_norms = norms
        return adv


class FABT(FAB):
    """FAB-T, AutoAttack's third attack: ``FAB(..., targets=9)``, untargeted over the 9 most likely other
    classes (see ``FAB``)."""

    def __init__(
        self, model: nn.Module, eps: float = 8 / 255, steps: int = 100, norm: str = "inf", *, targets: int = 9, **kwargs
    ) -> None:
        super().__init__(model, eps, steps, norm, targets=targets, **kwargs)
