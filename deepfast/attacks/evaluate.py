"""Robust accuracy of a classifier: the worst case per sample over several attacks, at several eps.

For each batch and each eps, the attacks run in turn (white-box ones first, then black-box ones), each
only on the samples that the clean model classifies correctly and that no earlier attack fooled. A
sample is robust at eps when no attack fooled it. A black-box attack that fools samples on which all
white-box attacks failed is a sign of gradient masking (Athalye et al. 2018): ``evaluate`` warns. ``attacks="autoattack"`` is AutoAttack's
standard ensemble (``deepfast.attacks.ensemble``).

Inside a torch.distributed process group (``torchrun``), every process calls ``evaluate`` with the same
data: the batches are dealt out to the processes (batch b to rank b mod W), the counts gathered and
summed in batch order, so that every process returns the table of one process, bit for bit, when the
attacks are seeded by ``seed`` (each batch's by the index of its first sample, whichever rank runs it).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from deepfast._validation import check_finite_float
from deepfast.attacks.base import (
    Attack,
    Normalization,
    check_classes,
    check_finite_logits,
    check_images,
    check_labels,
    eval_mode,
    model_device,
)
from deepfast.attacks.ensemble import in_turn
from deepfast.attacks.registry import ATTACKS, PRESETS, factories, known
from deepfast.progress import bar

AttackSpec = (
    str | Callable[..., Attack]
)  # a name of ATTACKS or PRESETS, or factory(model, eps=, normalization=) -> Attack

__all__ = ["ATTACKS", "PRESETS", "Evaluation", "GradientMaskingWarning", "evaluate"]


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
        head = [
            "eps",
            "clean",
            *(f"after {name}" for name in self.accuracy_after),
            "robust",
            "mean Linf",
            "mean L2",
            "black-box only",
        ]
        rows = [
            [
                f"{e:.4g}",
                f"{100 * self.clean_accuracy:.1f}%",
                *(f"{100 * acc[i]:.1f}%" for acc in self.accuracy_after.values()),
                f"{100 * self.robust_accuracy[i]:.1f}%",
                f"{self.mean_linf[i]:.4f}",
                f"{self.mean_l2[i]:.4f}",
                str(self.black_box_only[i]),
            ]
            for i, e in enumerate(self.eps)
        ]
        widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(head)]
        lines = ["  ".join(v.rjust(wd) for v, wd in zip(line, widths)) for line in [head, *rows]]
        lines.insert(1, "  ".join("-" * wd for wd in widths))
        return "\n".join([f"{self.n} samples", *lines])


def _shard(data: object, batch_size: int, rank: int, size: int) -> tuple[Iterable, int | None]:
    """(iterable of (index of the batch's first sample, batch), number of batches if known): the
    batches b with b mod ``size`` == ``rank`` of ``data`` cut in batches of ``batch_size``."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        images, labels = data
        chunks = list(zip(range(0, len(images), batch_size), zip(images.split(batch_size), labels.split(batch_size))))
        return chunks[rank::size], len(chunks[rank::size])
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        starts = list(range(0, len(data), batch_size))[rank::size]
        loader = DataLoader(data, batch_sampler=[list(range(i, min(i + batch_size, len(data)))) for i in starts])
        return zip(starts, loader), len(starts)
    if isinstance(data, Iterable):

        def owned() -> Iterator[tuple[int, object]]:
            start = 0
            for b, batch in enumerate(data):
                if b % size == rank:
                    yield start, batch
                start += len(batch[0]) if isinstance(batch, (tuple, list)) and batch else 0

        total = len(data) if hasattr(data, "__len__") else None
        return owned(), None if total is None else len(range(rank, total, size))
    raise TypeError(
        f"data must be (images, labels) tensors, a Dataset or an iterable of batches, got {type(data).__name__}"
    )


def _checked(batch: object) -> tuple[Tensor, Tensor]:
    if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
        raise ValueError(f"data must yield (images, labels) batches, got {type(batch).__name__}")
    images, labels = batch[0], batch[1]
    check_images(images)
    check_labels(labels, images.shape[0])
    return images, labels


def _factories(attacks: str | Sequence[AttackSpec]) -> list[Callable[..., Attack]]:
    out = []
    for spec in [attacks] if isinstance(attacks, str) else attacks:
        if isinstance(spec, str):
            if spec not in ATTACKS and spec not in PRESETS:
                raise ValueError(f"attacks: unknown attack name {spec!r}; known: {known()}")
            out += factories([spec])
        elif callable(spec):
            out.append(spec)
        else:
            raise TypeError(
                f"attacks must hold attack names or factories (model, eps=, normalization=) -> Attack, got {spec!r}"
            )
    return out


def _world() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed process group, (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(records: list, size: int) -> list:
    """Every process's records, on every process ([records] in one process)."""
    if size == 1:
        return [records]
    import torch.distributed as dist

    out: list = [None] * size
    dist.all_gather_object(out, records)
    return out


def evaluate(
    model: nn.Module,
    data: object,
    attacks: str | Sequence[AttackSpec] = ("pgd", "square"),
    eps: Sequence[float] = (8 / 255,),
    *,
    normalization: Normalization | None = None,
    batch_size: int = 256,
    seed: int | None = 0,
    progress: bool = True,
) -> Evaluation:
    """Clean accuracy, and robust accuracy per eps, worst case over ``attacks`` per sample.

    Args:
        model: a classifier, images (N, ...) in [0, 1] (normalized by ``normalization``) -> logits (N, K).
        data: (images, labels) tensors, a map-style Dataset of (image, label) items, or an iterable of
            (images, labels) batches (a DataLoader); images in [0, 1]. In a process group, the whole
            data on every process (not a per-process shard).
        attacks: names (``deepfast.attacks.registry.ATTACKS``: "fgsm", "pgd", "bim", "mifgsm", "apgd",
            "apgd-dlr", "apgd-t", "fab", "fab-t", "eot", "square"), presets ("autoattack": APGD-CE,
            APGD-T, FAB-T, Square with the paper's settings, Linf; ``registry.autoattack(norm="2")`` for
            L2) or factories called as ``factory(model, eps=e, normalization=normalization)`` (an Attack
            class, ``functools.partial(PGD, steps=50)``). They run untargeted; white-box ones first.
        eps: the budgets, each >= 0, in [0, 1] pixel space.
        batch_size: for tensors and Datasets.
        seed: the attacks on the batch whose first sample has index i are seeded with seed + i (their
            own seeds are replaced), so that a sample's attack does not depend on the process that runs
            it; None: the attacks' own seeds (the global RNG where those are None).
        progress: show a tqdm progress bar over the batches (on rank 0).
    Returns an ``Evaluation`` (``.table()`` prints it); warns with ``GradientMaskingWarning`` when a
    black-box attack fooled samples that every white-box attack failed on.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(eps, (int, float)):
        eps = [eps]
    eps = [check_finite_float(e, "eps", minimum=0) for e in eps]
    if not eps:
        raise ValueError("eps must hold at least one value")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    fs = _factories(attacks)
    if not fs:
        raise ValueError("attacks must hold at least one attack")
    grid = [[f(model, eps=e, normalization=normalization) for f in fs] for e in eps]
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
    rank, size = _world()

    records = []  # per batch: (index of its first sample, counts)
    batches, total = _shard(data, batch_size, rank, size)
    with eval_mode(model):
        for start, batch in bar(batches, total=total, disable=not progress or rank != 0, desc="evaluate", unit="batch"):
            images, labels = _checked(batch)
            x, y = images.to(device), labels.to(device, torch.int64)  # attacks keep the images' dtype
            with torch.no_grad():
                logits = classifier.logits(x)
            check_classes(*(int(v) for v in torch.aminmax(y)), logits.shape[1])
            check_finite_logits(logits)
            correct = logits.argmax(dim=1) == y
            counts = {
                "n": x.shape[0],
                "clean": int(correct.sum()),
                "robust": [],
                "after": [],
                "fooled": [],
                "linf": [],
                "l2": [],
                "masked": [],
            }
            for row in grid:
                if seed is not None:
                    for attack in row:
                        attack.seed = seed + start
                still, after, fooled, linf, l2, masked = correct.clone(), [], 0, 0.0, 0.0, 0
                for attack, (idx, adv, hit) in zip(row, in_turn(row, classifier, x, y, still)):
                    delta = (adv[hit].to(x) - x[idx[hit]]).flatten(1)
                    fooled += int(hit.sum())
                    linf += float(delta.abs().amax(dim=1).sum()) if delta.numel() else 0.0
                    l2 += float(delta.norm(dim=1).sum()) if delta.numel() else 0.0
                    if attack.black_box and has_white_box:
                        masked += int(hit.sum())
                    after.append(int(still.sum()))
                for key, value in zip(
                    ("robust", "after", "fooled", "linf", "l2", "masked"),
                    (int(still.sum()), after, fooled, linf, l2, masked),
                ):
                    counts[key].append(value)
            records.append((start, counts))
    records = sorted((r for part in _gather(records, size) for r in part), key=lambda r: r[0])
    k = len(eps)
    n = sum(c["n"] for _, c in records)
    if n == 0:
        raise ValueError("data must hold at least one sample")

    def total_of(key: str, i: int, j: int | None = None) -> float:
        return sum(c[key][i] if j is None else c[key][i][j] for _, c in records)

    fooled = [total_of("fooled", i) for i in range(k)]
    linf, l2, masked = ([total_of(key, i) for i in range(k)] for key in ("linf", "l2", "masked"))
    flagged = [f"eps={e:.4g}: {m}" for e, m in zip(eps, masked) if m > 0]
    if flagged and rank == 0:
        warnings.warn(
            "a black-box attack fooled samples on which every white-box attack failed ("
            + ", ".join(flagged)
            + " samples): a sign of gradient masking; the white-box robust accuracy is not to be trusted",
            GradientMaskingWarning,
            stacklevel=2,
        )
    return Evaluation(
        n=n,
        clean_accuracy=sum(c["clean"] for _, c in records) / n,
        eps=eps,
        robust_accuracy=[total_of("robust", i) / n for i in range(k)],
        accuracy_after={name: [total_of("after", i, j) / n for i in range(k)] for j, name in enumerate(names)},
        mean_linf=[s / f if f else math.nan for s, f in zip(linf, fooled)],
        mean_l2=[s / f if f else math.nan for s, f in zip(l2, fooled)],
        black_box_only=masked,
    )
