"""AutoAttack's standard ensemble (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with
an ensemble of diverse parameter-free attacks"), with the paper's settings, in Linf or L2:

    APGD-CE  ``APGD``: 100 steps, cross-entropy, 1 run
    APGD-T   ``APGDT``: 100 steps per class, the targeted DLR loss towards each of the 9 most likely
             other classes
    FAB-T    ``FABT``: 100 steps per class, towards each of the 9 most likely other classes
    Square   ``Square``: 5000 queries, p_init 0.8

each on the samples that no attack before it has fooled. A sample is robust when none fooled it.
``evaluate(model, data, attacks="autoattack", eps=[8/255])`` measures robust accuracy with them
(``attacks=deepfast.attacks.autoattack(norm="2")`` for L2); ``AutoAttack(model, eps)(images, labels)`` makes the
adversarial examples of one batch, as torchattacks' ``AutoAttack(version="standard")`` does.

Where results may differ from the reference implementation (auto-attack): each attack's own notes
(``deepfast.attacks.apgd``, ``fab``, ``square``); the random numbers (each attack draws from a generator
seeded with the attack's seed, and ``evaluate`` seeds each batch by the index of its first sample);
and no sanity checks of the model (the reference warns of randomness and of softmax outputs).
torchattacks' ``AutoAttack`` differs from the paper's settings: its APGD, APGD-T and FAB run 10 steps
(its defaults), not 100.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from deepfast.attacks.base import Attack, Normalization
from deepfast.attacks.registry import autoattack


def in_turn(
    attacks: Sequence[Attack], judge: Attack, x: Tensor, y: Tensor, still: Tensor
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Runs ``attacks`` in turn, each on the samples of x (N, ...) with labels y (N,) that are ``still``
    robust ((N,) bool, updated in place); yields, for each attack, (the indices it ran on (M,), its
    examples (M, ...), which of them ``judge``'s model misclassifies (M,) bool)."""
    for attack in attacks:
        idx = still.nonzero().squeeze(1)
        if idx.numel() == 0:
            empty = torch.zeros(0, dtype=torch.bool, device=x.device)
            yield idx, x[idx], empty
            continue
        adv = attack(x[idx], y[idx])
        with torch.no_grad():
            hit = judge.logits(adv.to(x)).argmax(dim=1) != y[idx]
        still[idx[hit]] = False
        yield idx, adv, hit


class AutoAttack(Attack):
    """AutoAttack, standard: ``adv = AutoAttack(model, eps=8/255, norm="inf")(images, labels)``.

    Untargeted. Each sample's result is the example of the first attack that fooled the model, else the
    image itself. ``settings`` go to every attack of the ensemble (e.g. ``amp="bf16"``; ``steps=10`` for
    torchattacks' settings); seed, normalization and amp as in ``Attack``. ``last_fooled_by``: int64 (N,),
    the index in ``attacks`` of the attack that fooled each sample in the last call (-1: none; the
    clean misclassified ones: -1 too, their result is the image).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        norm: str = "inf",
        *,
        normalization: Normalization | None = None,
        seed: int | None = 0,
        amp: str | None = None,
        **settings: object,
    ) -> None:
        super().__init__(model, eps=eps, normalization=normalization, seed=seed, amp=amp)
        self.norm = norm
        self.attacks = [
            f(model, eps=eps, normalization=normalization) for f in autoattack(norm, seed=seed, amp=amp, **settings)
        ]
        self.last_fooled_by: Tensor | None = None

    def __repr__(self) -> str:
        return f"AutoAttack(eps={self.eps:.4g}, norm={self.norm!r}, attacks={self.attacks!r})"

    def _attack(self, x: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None) -> Tensor:
        with torch.no_grad():
            still = self.logits(x).argmax(dim=1) == goal
        adv, fooled_by = x.clone(), torch.full_like(goal, -1)
        for attack in self.attacks:
            attack.seed = self.seed
        for i, (idx, examples, hit) in enumerate(in_turn(self.attacks, self, x, goal, still)):
            adv[idx[hit]] = examples[hit].to(x)
            fooled_by[idx[hit]] = i
        self.last_fooled_by = fooled_by
        return adv
