"""Robust accuracy of a classifier: the worst case per sample over several attacks, at several eps.

For each batch and each eps, the attacks run in turn (white-box ones first, then black-box ones), each
only on the samples that the clean model classifies correctly and that no earlier attack fooled. A
sample is robust at eps when no attack fooled it. A black-box attack that fools samples on which all
white-box attacks failed is a sign of gradient masking (Athalye et al. 2018): ``evaluate`` warns.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from deepfast.attacks.base import (
    Attack, Normalization, check_classes, check_eps, check_finite_logits, check_images, check_labels, eval_mode,
    model_device,
)
from deepfast.attacks.apgd import APGD, APGDDLR
from deepfast.attacks.eot import EOTPGD
from deepfast.attacks.fgsm import FGSM
from deepfast.attacks.pgd import BIM, MIFGSM, PGD
from deepfast.attacks.square import Square

ATTACKS: dict[str, Callable[..., Attack]] = {
    "fgsm": FGSM, "pgd": PGD, "bim": BIM, "mifgsm": MIFGSM, "apgd": APGD, "apgd-dlr": APGDDLR, "eot": EOTPGD,
    "square": Square,
}

AttackSpec = str | Callable[..., Attack]  # a name of ATTACKS, or factory(model, eps=, normalization=) -> Attack


class GradientMaskingWarning(UserWarning):
    """A black-box attack succeeded where every white-box attack failed."""


@dataclass
class Evaluation:
    """What ``evaluate`` measured; accuracies are fractions of ``n`` samples, lists run over ``eps``.

    accuracy_after: for each attack (in the order run), the accuracy left after it and every attack
    before it. mean_linf / mean_l2: mean norm of the perturbations that fooled the model (NaN where
    none did). black_box_only: samples that a black-box attack fooled after every white-box one failed.
    """

    n: int
    clean_accuracy: float
    eps: list[float]
    robust_accuracy: list[float]
    accuracy_after: dict[str, list[float]] = field(default_factory=dict)
    mean_linf: list[float] = field(default_factory=list)
    mean_l2: list[float] = field(default_factory=list)
    black_box_only: list[int] = field(default_factory=list)

    def table(self) -> str:
        """A text table: one row per eps, accuracies in %."""
        head = ["eps", "clean", *(f"after {name}" for name in self.accuracy_after), "robust", "mean Linf",
                "mean L2", "black-box only"]
        rows = [[f"{e:.4g}", f"{100 * self.clean_accuracy:.1f}%",
                 *(f"{100 * acc[i]:.1f}%" for acc in self.accuracy_after.values()),
                 f"{100 * self.robust_accuracy[i]:.1f}%", f"{self.mean_linf[i]:.4f}", f"{self.mean_l2[i]:.4f}",
                 str(self.black_box_only[i])] for i, e in enumerate(self.eps)]
        widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(head)]
        lines = ["  ".join(v.rjust(wd) for v, wd in zip(line, widths)) for line in [head, *rows]]
        lines.insert(1, "  ".join("-" * wd for wd in widths))
        return "\n".join([f"{self.n} samples", *lines])


def _batches(data: object, batch_size: int) -> tuple[Iterable, int | None]:
    """(iterable of (images, labels) batches, number of batches if known)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        images, labels = data
        chunks = list(zip(images.split(batch_size), labels.split(batch_size)))
        return chunks, len(chunks)
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        loader = DataLoader(data, batch_size=batch_size)
        return loader, len(loader)
    if isinstance(data, Iterable):
        return data, (len(data) if hasattr(data, "__len__") else None)
    raise TypeError(f"data must be (images, labels) tensors, a Dataset or an iterable of batches, got {type(data).__name__}")


def _checked(batches: Iterable) -> Iterator[tuple[Tensor, Tensor]]:
    for batch in batches:
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise ValueError(f"data must yield (images, labels) batches, got {type(batch).__name__}")
        images, labels = batch[0], batch[1]
        check_images(images)
        check_labels(labels, images.shape[0])
        yield images, labels


def _factory(spec: AttackSpec) -> Callable[..., Attack]:
    if isinstance(spec, str):
        if spec not in ATTACKS:
            raise ValueError(f"attacks: unknown attack name {spec!r}; known: {', '.join(ATTACKS)}")
        return ATTACKS[spec]
    if not callable(spec):
        raise TypeError(f"attacks must hold attack names or factories (model, eps=, normalization=) -> Attack, got {spec!r}")
    return spec


def evaluate(
    model: nn.Module,
    data: object,
    attacks: Sequence[AttackSpec] = ("pgd", "square"),
    eps: Sequence[float] = (8 / 255,),
    *,
    normalization: Normalization | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> Evaluation:
    """Clean accuracy, and robust accuracy per eps, worst case over ``attacks`` per sample.

    Args:
        model: a classifier, images (N, ...) in [0, 1] (normalized by ``normalization``) -> logits (N, K).
        data: (images, labels) tensors, a map-style Dataset of (image, label) items, or an iterable of
            (images, labels) batches (a DataLoader); images in [0, 1].
        attacks: names ("fgsm", "pgd", "bim", "mifgsm", "eot", "square") or factories called as
            ``factory(model, eps=e, normalization=normalization)`` (an Attack class,
            ``functools.partial(PGD, steps=50)``). They run untargeted; white-box ones first.
        eps: the budgets, each >= 0, in [0, 1] pixel space.
        batch_size: for tensors and Datasets.
        progress: show a tqdm progress bar over the batches.
    Returns an ``Evaluation`` (``.table()`` prints it); warns with ``GradientMaskingWarning`` when a
    black-box attack fooled samples that every white-box attack failed on.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(eps, (int, float)):
        eps = [eps]
    eps = [check_eps(e) for e in eps]
    if not eps:
        raise ValueError("eps must hold at least one value")
    factories = [_factory(a) for a in attacks]
    if not factories:
        raise ValueError("attacks must hold at least one attack")
    grid = [[f(model, eps=e, normalization=normalization) for f in factories] for e in eps]
    for row in grid:
        row.sort(key=lambda a: a.black_box)  # stable: white-box first, in the order given
    names: list[str] = []
    for a in grid[0]:
        name, copy = a.name, 2
        while name in names:  # the same attack twice (other settings): PGD, PGD#2
            name, copy = f"{a.name}#{copy}", copy + 1
        names.append(name)
    has_white_box = any(not a.black_box for a in grid[0])
    classifier = Attack(model, eps=0.0, normalization=normalization)
    device = model_device(model)

    k = len(eps)
    n = clean = 0
    robust = [0] * k
    after = {name: [0] * k for name in names}
    fooled = [0] * k
    linf, l2 = [0.0] * k, [0.0] * k
    masked = [0] * k
    batches, total = _batches(data, batch_size)
    with eval_mode(model):
        for images, labels in tqdm(_checked(batches), total=total, disable=not progress, desc="evaluate", unit="batch"):
            x, y = images.to(device), labels.to(device, torch.int64)  # attacks keep the images' dtype
            with torch.no_grad():
                logits = classifier.logits(x)
            check_classes(*(int(v) for v in torch.aminmax(y)), logits.shape[1])
            check_finite_logits(logits)
            correct = logits.argmax(dim=1) == y
            n += x.shape[0]
            clean += int(correct.sum())
            for i, row in enumerate(grid):
                still = correct.clone()
                for name, attack in zip(names, row):
                    idx = still.nonzero().squeeze(1)
                    if idx.numel() > 0:
                        adv = attack(x[idx], y[idx])
                        with torch.no_grad():
                            hit = classifier.logits(adv).argmax(dim=1) != y[idx]
                        still[idx[hit]] = False
                        delta = (adv[hit] - x[idx[hit]]).flatten(1)
                        fooled[i] += int(hit.sum())
                        linf[i] += float(delta.abs().amax(dim=1).sum())
                        l2[i] += float(delta.norm(dim=1).sum())
                        if attack.black_box and has_white_box:
                            masked[i] += int(hit.sum())
                    after[name][i] += int(still.sum())
                robust[i] += int(still.sum())
    if n == 0:
        raise ValueError("data must hold at least one sample")
    flagged = [f"eps={e:.4g}: {m}" for e, m in zip(eps, masked) if m > 0]
    if flagged:
        warnings.warn(
            "a black-box attack fooled samples on which every white-box attack failed (" + ", ".join(flagged)
            + " samples): a sign of gradient masking; the white-box robust accuracy is not to be trusted",
            GradientMaskingWarning, stacklevel=2)
    return Evaluation(
        n=n, clean_accuracy=clean / n, eps=eps, robust_accuracy=[r / n for r in robust],
        accuracy_after={name: [c / n for c in counts] for name, counts in after.items()},
        mean_linf=[s / f if f else math.nan for s, f in zip(linf, fooled)],
        mean_l2=[s / f if f else math.nan for s, f in zip(l2, fooled)],
        black_box_only=masked,
    )
