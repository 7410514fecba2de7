"""Square attack (Andriushchenko et al. 2020), Linf and L2: a score-based black-box attack. It reads only
the model's logits (under torch.no_grad: no backward, no gradient) and searches by random squares.

Per image, with margin(x) = z_y - max_{j != y} z_j (untargeted) or max_{j != t} z_j - z_t (targeted),
which the attack lowers below 0, and delta = x_best - x:

    Linf start:  x_best = clip(x + eps * s, 0, 1),   s = +-1 per channel and column (vertical stripes)
    L2 start:    a grid of (H // 5)-pixel tiles, each the pseudo-Gaussian pattern P (below) with a random
                 sign per channel; delta scaled to norm eps, x_best = clip(x + delta, 0, 1)
    query i (while margin(x_best) >= 0 and i < queries), one candidate; it replaces x_best if its
    margin is lower:
      Linf:  a square of side h_i at a random position; in it, every pixel of a channel set to
             clip(x + eps * r_c, 0, 1) with a random sign r_c per channel (drawn again while that
             changes nothing), elsewhere x_best kept
      L2:    two squares W1, W2 of side h_i at random positions; W2's perturbation is removed and W1's
             becomes, per channel, P r_c + delta_W1 / ||delta_W1||, rescaled to the norm
             sqrt(max(eps^2 - ||delta||^2, 0) / C + ||delta_{W1 u W2}||^2) (the mass of both windows,
             plus what the budget has left); the whole delta is then scaled to norm eps, clipped to the box

The side h_i = round(sqrt(p_i * H * W)) (Linf: at least 1, below min(H, W); L2: at least 3, odd, at
most min(H, W)), with p_i = p_init halved at the fractions 0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4,
0.6, 0.8 of the queries (the paper's schedule). P, of side s: rows above s // 2 hold
sum_{n >= d} 1 / (n + 1)^2, d the Chebyshev distance to their center, rows below minus the same, the
whole scaled to unit norm and transposed with probability 1/2.

Where results differ from the reference implementation (Andriushchenko's code, AutoAttack's square.py,
ported by torchattacks): each image draws its own square positions and transposes (the reference draws
one position per query for the whole batch), from the attack's generator; the candidate is made for the
images not yet fooled only, as in the reference.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from deepfast._validation import check_choice
from deepfast.attacks.base import Attack, Normalization, check_positive_int
from deepfast.attacks.targets import Target
from deepfast.ops.pgd_step import NORMS

# Fractions of the query budget at which the square's area p is halved.
P_HALVINGS = (0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)
RESAMPLES = 10  # draws of new signs for a square that would change nothing


def margin(logits: Tensor, goal: Tensor, targeted: bool) -> Tensor:
    """(N,): z_goal - max of the other logits (untargeted), or minus that (targeted); < 0 on success."""
    own = logits.gather(1, goal[:, None]).squeeze(1)
    others = logits.scatter(1, goal[:, None], -torch.inf).amax(dim=1)
    return others - own if targeted else own - others


class Square(Attack):
    """Square attack: ``adv = Square(model, eps=8/255, queries=1000, norm="inf")(images, labels)``.

    Args:
        eps: radius (Linf or L2), >= 0.
        queries: the most model evaluations per image (the start counts as one), >= 1.
        p_init: initial fraction of the image's pixels that the square covers, in (0, 1].
        norm: "inf" or "2".
        target, normalization, seed, amp: see ``Attack``.

    Images are (N, C, H, W). Each query runs the model on the images not yet fooled only.
    ``last_queries``: int64 (N,), the queries each image of the last call used.
    """

    black_box = True

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        queries: int = 1000,
        p_init: float = 0.8,
        norm: str = "inf",
        *,
        target: Target = None,
        normalization: Normalization | None = None,
        seed: int | None = None,
        amp: str | None = None,
    ) -> None:
        super().__init__(model, eps=eps, target=target, normalization=normalization, seed=seed, amp=amp)
        self.queries = check_positive_int(queries, "queries")
        if isinstance(p_init, bool) or not isinstance(p_init, (int, float)) or not 0 < p_init <= 1:
            raise ValueError(f"p_init must be a float in (0, 1], got {p_init!r}")
        self.p_init = float(p_init)
        check_choice(norm, "norm", NORMS)
        self.norm = norm
        self.last_queries: Tensor | None = None

    def __repr__(self) -> str:
        return (
            f"Square(eps={self.eps:.4g}, queries={self.queries}, p_init={self.p_init}, norm={self.norm!r}, "
            f"target={self.target!r})"
        )

    def side(self, i: int, h: int, w: int) -> int:
        """Side of the square at query i of ``queries``."""
        p = self.p_init / 2 ** sum(i > f * self.queries for f in P_HALVINGS)
        s = round(math.sqrt(p * h * w))
        if self.norm == "inf":
            return max(1, min(s, min(h, w) - 1))
        return min(max(s, 3) | 1, min(h, w))  # odd, at least 3

    def _margin(self, x: Tensor, goal: Tensor, targeted: bool) -> Tensor:
        return margin(self.logits(x), goal, targeted)

    @torch.no_grad()
    def _attack(self, x: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"images must have shape (N, C, H, W) for the Square attack, got {tuple(x.shape)}")
        n, c, h, w = x.shape
        draw = _Draws(x, generator)
        best = self._start(x, draw)
        loss = self._margin(best, goal, targeted)
        used = torch.ones(n, dtype=torch.int64, device=x.device)
        for i in range(1, self.queries):
            todo = (loss >= 0).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            candidate = self._linf_candidate if self.norm == "inf" else self._l2_candidate
            cand = candidate(x[todo], best[todo], self.side(i, h, w), draw)
            new = self._margin(cand, goal[todo], targeted)
            used[todo] += 1
            better = new < loss[todo]
            best[todo[better]] = cand[better]
            loss[todo[better]] = new[better]
        self.last_queries = used
        return best

    def _start(self, x: Tensor, draw: _Draws) -> Tensor:
        n, c, h, w = x.shape
        if self.norm == "inf":
            return (x + self.eps * draw.signs(n, c, 1, w)).clamp_(0, 1)
        s = max(h // 5, 1)
        first = (h - 5 * s) // 2
        delta = torch.zeros_like(x)
        for top in range(first, h - s + 1, s):
            for left in range(first, w - s + 1, s):
                pattern = torch.where(draw.coins(n), pseudo_gaussian(s, x).T, pseudo_gaussian(s, x))
                delta[:, :, top : top + s, left : left + s] += pattern * draw.signs(n, c, 1, 1)
        return (x + self.eps * delta / _l2(delta).clamp_min(1e-12)).clamp_(0, 1)

    def _linf_candidate(self, xs: Tensor, bs: Tensor, s: int, draw: _Draws) -> Tensor:
        m, c = xs.shape[:2]
        square = draw.square(m, s)
        cand = torch.where(square, (xs + self.eps * draw.signs(m, c, 1, 1)).clamp_(0, 1), bs)
        for _ in range(RESAMPLES):
            same = (cand == bs).flatten(1).all(dim=1)
            if not bool(same.any()):
                break
            redraw = torch.where(square, (xs + self.eps * draw.signs(m, c, 1, 1)).clamp_(0, 1), bs)
            cand = torch.where(same.view(m, 1, 1, 1), redraw, cand)
        return cand

    def _l2_candidate(self, xs: Tensor, bs: Tensor, s: int, draw: _Draws) -> Tensor:
        m, c = xs.shape[:2]
        delta = bs - xs
        (w1, rows, cols), (w2, _, _) = draw.square(m, s, offsets=True), draw.square(m, s, offsets=True)
        in_w1 = delta * w1
        pattern = pseudo_gaussian(s, xs)
        pattern = torch.where(draw.coins(m), pattern[cols, rows], pattern[rows, cols]) * w1  # (m, 1, H, W)
        new = pattern * draw.signs(m, c, 1, 1) + in_w1 / (_l2(in_w1, channels=True) + 1e-12)
        budget = (self.eps**2 - _l2(delta) ** 2).clamp_min(0) / c + _l2(delta * (w1 | w2)) ** 2
        new = new / (_l2(new, channels=True) + 1e-12) * budget.sqrt()
        delta = torch.where(w1, new, torch.where(w2, 0, delta))
        return (xs + self.eps * delta / (_l2(delta) + 1e-12)).clamp_(0, 1)


def _l2(t: Tensor, channels: bool = False) -> Tensor:
    """L2 norms of t (N, C, H, W): per image (N, 1, 1, 1), or per image and channel (N, C, 1, 1)."""
    return torch.linalg.vector_norm(t, dim=(2, 3) if channels else (1, 2, 3), keepdim=True)


def pseudo_gaussian(s: int, like: Tensor) -> Tensor:
    """The L2 Square attack's s x s pattern (unit L2 norm, like's dtype and device): the upper s // 2
    rows hold sum_{n >= d} 1 / (n + 1)^2, d the Chebyshev distance to their center, the lower rows minus
    the same for theirs (see the module docstring)."""

    def half(rows: int) -> Tensor:
        depth = max(rows // 2, s // 2) + 1
        tail = (1 / torch.arange(1, depth + 1, dtype=like.dtype, device=like.device) ** 2).flip(0).cumsum(0).flip(0)
        i = (torch.arange(rows, device=like.device) - rows // 2).abs()
        j = (torch.arange(s, device=like.device) - s // 2).abs()
        block = tail[torch.maximum(i[:, None], j[None, :])]
        return block / torch.linalg.vector_norm(block).clamp_min(1e-12)

    p = torch.cat([half(s // 2), -half(s - s // 2)])
    return p / torch.linalg.vector_norm(p)


class _Draws:
    """The random draws of one Square call, from ``generator`` on x's device."""

    def __init__(self, x: Tensor, generator: torch.Generator | None) -> None:
        self.x, self.generator = x, generator
        h, w = x.shape[2:]
        self.rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
        self.cols = torch.arange(w, device=x.device).view(1, 1, 1, w)

    def signs(self, *shape: int) -> Tensor:
        """Random +-1 of x's dtype."""
        return (
            torch.randint(0, 2, shape, device=self.x.device, generator=self.generator).to(self.x.dtype).mul_(2).sub_(1)
        )

    def coins(self, m: int) -> Tensor:
        """Random bool (m, 1, 1, 1)."""
        return torch.randint(0, 2, (m, 1, 1, 1), device=self.x.device, generator=self.generator).bool()

    def square(self, m: int, s: int, offsets: bool = False):
        """A bool mask (m, 1, H, W) of a square of side s at a random position per image; with
        ``offsets`` also each pixel's row and column inside it (clamped to [0, s) outside)."""
        h, w = self.x.shape[2:]
        top = torch.randint(0, h - s + 1, (m, 1, 1, 1), device=self.x.device, generator=self.generator)
        left = torch.randint(0, w - s + 1, (m, 1, 1, 1), device=self.x.device, generator=self.generator)
        mask = (self.rows >= top) & (self.rows < top + s) & (self.cols >= left) & (self.cols < left + s)
        if not offsets:
            return mask
        return mask, (self.rows - top).clamp(0, s - 1), (self.cols - left).clamp(0, s - 1)
