"""Square attack, Linf (Andriushchenko et al. 2020): a score-based black-box attack. It reads only the
model's logits (under torch.no_grad: no backward, no gradient) and searches by random squares.

Per image, with margin(x) = z_y - max_{j != y} z_j (untargeted) or max_{j != t} z_j - z_t (targeted),
which the attack lowers below 0:

    start:  x_best = clip(x + eps * s, 0, 1),   s = +-1 per channel and column (vertical stripes)
    query i (while margin(x_best) >= 0 and i < queries):
        a square of side h_i at a random position; in it, every pixel of a channel set to
        clip(x + eps * r_c, 0, 1) with a random sign r_c per channel (drawn again while that changes
        nothing), elsewhere x_best kept; the candidate replaces x_best if its margin is lower.

The side h_i = round(sqrt(p_i * H * W)) (at least 1, below min(H, W)), with p_i = p_init halved at
the fractions 0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8 of the queries (the paper's schedule).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from deepfast.attacks.base import Attack, Normalization, check_positive_int
from deepfast.attacks.targets import Target

# Fractions of the query budget at which the square's area p is halved.
P_HALVINGS = (0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)
RESAMPLES = 10  # draws of new signs for a square that would change nothing


def margin(logits: Tensor, goal: Tensor, targeted: bool) -> Tensor:
    """(N,): z_goal - max of the other logits (untargeted), or minus that (targeted); < 0 on success."""
    own = logits.gather(1, goal[:, None]).squeeze(1)
    others = logits.scatter(1, goal[:, None], -torch.inf).amax(dim=1)
    return others - own if targeted else own - others


class Square(Attack):
    """Square attack (Linf): ``adv = Square(model, eps=8/255, queries=1000)(images, labels)``.

    Args:
        eps: Linf radius, >= 0.
        queries: the most model evaluations per image (the start counts as one), >= 1.
        p_init: initial fraction of the image's pixels that the square covers, in (0, 1].
        target, normalization, seed, amp: see ``Attack``.

    Images are (N, C, H, W). Each query runs the model on the images not yet fooled only.
    ``last_queries``: int64 (N,), the queries each image of the last call used.
    """

    black_box = True

    def __init__(self, model: nn.Module, eps: float = 8 / 255, queries: int = 1000, p_init: float = 0.8, *,
                 target: Target = None, normalization: Normalization | None = None, seed: int | None = None,
                 amp: str | None = None) -> None:
        super().__init__(model, eps=eps, target=target, normalization=normalization, seed=seed, amp=amp)
        self.queries = check_positive_int(queries, "queries")
        if isinstance(p_init, bool) or not isinstance(p_init, (int, float)) or not 0 < p_init <= 1:
            raise ValueError(f"p_init must be a float in (0, 1], got {p_init!r}")
        self.p_init = float(p_init)
        self.last_queries: Tensor | None = None

    def __repr__(self) -> str:
        return f"Square(eps={self.eps:.4g}, queries={self.queries}, p_init={self.p_init}, target={self.target!r})"

    def side(self, i: int, h: int, w: int) -> int:
        """Side of the square at query i of ``queries``."""
        p = self.p_init / 2 ** sum(i > f * self.queries for f in P_HALVINGS)
        return max(1, min(round(math.sqrt(p * h * w)), min(h, w) - 1))

    def _margin(self, x: Tensor, goal: Tensor, targeted: bool) -> Tensor:
        return margin(self.logits(x), goal, targeted)

    @torch.no_grad()
    def _attack(self, x: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"images must have shape (N, C, H, W) for the Square attack, got {tuple(x.shape)}")
        n, c, h, w = x.shape

        def signs(*shape: int) -> Tensor:
            return torch.randint(0, 2, shape, device=x.device, generator=generator).to(x.dtype).mul_(2).sub_(1)

        best = (x + self.eps * signs(n, c, 1, w)).clamp_(0, 1)
        loss = self._margin(best, goal, targeted)
        used = torch.ones(n, dtype=torch.int64, device=x.device)
        rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
        for i in range(1, self.queries):
            todo = (loss >= 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            m, s = todo.numel(), self.side(i, h, w)
            xs, bs = x[todo], best[todo]
            top = torch.randint(0, h - s + 1, (m, 1, 1, 1), device=x.device, generator=generator)
            left = torch.randint(0, w - s + 1, (m, 1, 1, 1), device=x.device, generator=generator)
            square = (rows >= top) & (rows < top + s) & (cols >= left) & (cols < left + s)
            cand = torch.where(square, (xs + self.eps * signs(m, c, 1, 1)).clamp_(0, 1), bs)
            for _ in range(RESAMPLES):
                same = (cand == bs).flatten(1).all(dim=1)
                if not bool(same.any()):
                    break
                redraw = torch.where(square, (xs + self.eps * signs(m, c, 1, 1)).clamp_(0, 1), bs)
                cand = torch.where(same.view(m, 1, 1, 1), redraw, cand)
            new = self._margin(cand, goal[todo], targeted)
            used[todo] += 1
            better = new < loss[todo]
            best[todo[better]] = cand[better]
            loss[todo[better]] = new[better]
        self.last_queries = used
        return best
