"""Adversarial attacks on image classifiers: ``adv = PGD(model, eps=8/255, alpha=2/255, steps=10)(images, labels)``.

Images are (N, C, H, W) in [0, 1] (``normalization=(mean, std)`` for models trained on normalized
inputs); labels (N,) int64. Every attack runs the model in eval mode on the model's device, restores
its mode and never touches its parameters or their gradients. ``target=`` makes an attack targeted
(see ``deepfast.attacks.targets``). ``evaluate`` measures robust accuracy, worst case over attacks.

Attacks: FGSM, PGD / BIM / MIFGSM, APGD / APGDDLR / APGDT, FAB / FABT (minimal norm), EOTPGD, Square
(black box), all in Linf and L2 (FGSM, PGD and their relatives, APGD, FAB, Square); ``AutoAttack`` and
``evaluate(..., attacks="autoattack")``: AutoAttack's standard ensemble. Every attack takes
``amp="bf16"`` (the model under autocast); PGD and its relatives take ``cuda_graph=True`` (the step loop
replayed from a CUDA graph, ``deepfast.attacks.graphed``).
"""

from deepfast.attacks.apgd import APGD, APGDDLR, APGDT, dlr_loss, dlr_targeted_loss
from deepfast.attacks.base import Attack, eval_mode
from deepfast.attacks.ensemble import AutoAttack
from deepfast.attacks.eot import EOTPGD, RandomTransform
from deepfast.attacks.evaluate import Evaluation, GradientMaskingWarning, evaluate
from deepfast.attacks.fab import FAB, FABT
from deepfast.attacks.fgsm import FGSM
from deepfast.attacks.generate import generate_class
from deepfast.attacks.pgd import BIM, MIFGSM, PGD, pgd_reference
from deepfast.attacks.registry import ATTACKS, PRESETS, autoattack
from deepfast.attacks.square import Square
from deepfast.attacks.targets import TARGET_MODES, resolve_target

__all__ = [
    "APGD",
    "APGDDLR",
    "APGDT",
    "ATTACKS",
    "Attack",
    "AutoAttack",
    "BIM",
    "EOTPGD",
    "Evaluation",
    "FAB",
    "FABT",
    "FGSM",
    "GradientMaskingWarning",
    "MIFGSM",
    "PGD",
    "PRESETS",
    "RandomTransform",
    "Square",
    "TARGET_MODES",
    "autoattack",
    "eval_mode",
    "evaluate",
    "generate_class",
    "dlr_loss",
    "dlr_targeted_loss",
    "pgd_reference",
    "resolve_target",
]
