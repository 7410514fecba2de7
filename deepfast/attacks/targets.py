"""Target modes of targeted attacks: which class each adversarial example should be assigned to.

``target=`` of every attack is one of:

- None: untargeted (the attack makes the prediction differ from the label);
- a tensor (N,) of class indices, one per image;
- an int: the same class for every image;
- a function (images, labels) -> tensor (N,) of class indices (labels may be None);
- "least_likely": the class with the lowest clean logit of each image (Kurakin et al. 2017);
- "random": a class drawn uniformly among those != the label of each image.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

TARGET_MODES = ("least_likely", "random")

Target = None | int | str | Tensor | Callable[[Tensor, Tensor | None], Tensor]


def check_target(target: object) -> Target:
    """Checks a target spec as far as it can be without a batch; returns it."""
    if target is None or callable(target) or isinstance(target, Tensor):
        return target
    if isinstance(target, bool) or not isinstance(target, (int, str)):
        raise TypeError(
            f"target must be None, an int, a tensor, a function or a mode name, got {type(target).__name__}"
        )
    if isinstance(target, str) and target not in TARGET_MODES:
        raise ValueError(f"target must be one of {', '.join(map(repr, TARGET_MODES))} as a mode name, got {target!r}")
    if isinstance(target, int) and target < 0:
        raise ValueError(f"target must be a class index >= 0, got {target}")
    return target


def resolve_target(
    target: Target,
    images: Tensor,
    labels: Tensor | None,
    clean_logits: Callable[[Tensor], Tensor],
    generator: torch.Generator | None = None,
) -> tuple[Tensor, bool]:
    """(goal, targeted): goal (N,) int64 on the device of images, the labels when ``target`` is None
    (then targeted is False), else the target classes. ``clean_logits(images)`` is called (once) for
    the modes that need the number of classes or the clean prediction."""
    n, device = images.shape[0], images.device
    if target is None:
        if labels is None:
            raise ValueError("labels must be given for an untargeted attack (target=None)")
        return labels, False
    if isinstance(target, str) and labels is None and target == "random":
        raise ValueError('labels must be given for target="random" (the target differs from the label)')
    if target == "least_likely":
        return clean_logits(images).argmin(dim=1), True
    if target == "random":
        k = clean_logits(images).shape[1]
        offset = torch.randint(1, k, (n,), device=device, generator=generator)
        return (labels + offset) % k, True
    if isinstance(target, int):
        goal = torch.full((n,), target, dtype=torch.int64, device=device)
    else:
        goal = target(images, labels) if callable(target) else target
        if not isinstance(goal, Tensor) or goal.dtype.is_floating_point or goal.dtype == torch.bool:
            raise TypeError("target must give an integer tensor of class indices")
        if tuple(goal.shape) != (n,):
            raise ValueError(f"target must have shape (N,) = ({n},) for {n} images, got {tuple(goal.shape)}")
        goal = goal.to(device, torch.int64)
    k = clean_logits(images).shape[1]
    if bool((goal < 0).any()) or bool((goal >= k).any()):
        raise ValueError(
            f"target must hold class indices in [0, {k}), got values in [{goal.min().item()}, {goal.max().item()}]"
        )
    return goal, True


def other_classes(logits: Tensor, labels: Tensor, k: int) -> list[Tensor]:
    """The k classes of highest logit other than the label, most likely first: k tensors (N,) of class
    indices for logits (N, K) and labels (N,); the K - 1 other classes where K - 1 < k."""
    ranked = logits.scatter(1, labels[:, None], -torch.inf).argsort(dim=1, descending=True)
    return [ranked[:, r] for r in range(min(k, logits.shape[1] - 1))]


def until_done(
    x: Tensor,
    done: Tensor,
    aims: list[Tensor | None],
    runs_per_aim: int,
    run: Callable[[Tensor, Tensor | None, int], tuple[Tensor, Tensor]],
) -> Tensor:
    """The loop of multi-target attacks (APGD-T, FAB-T; Croce & Hein 2020): for each aim in turn (a
    tensor (N,) of classes, or None), ``runs_per_aim`` times, ``run(idx, aim[idx], i) -> (adv (M, ...),
    done (M,) bool)`` attacks the samples ``idx`` (M,) not done yet (``done`` (N,) bool, updated in
    place), i counting the runs of this aim. Returns adv (N, ...): each sample's result from the run
    that did it, else from the last run on it (x where none ran)."""
    adv = x.clone()
    for aim in aims:
        for i in range(runs_per_aim):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                return adv
            adv[idx], done[idx] = run(idx, None if aim is None else aim[idx], i)
    return adv
