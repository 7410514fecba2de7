"""The attacks by name (``evaluate(attacks=[...])``, ``deepfast attack --attack ...``) and the presets:
"autoattack" is AutoAttack's standard ensemble with the paper's settings (``deepfast.attacks.ensemble``)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence

from deepfast.attacks.apgd import APGD, APGDDLR, APGDT
from deepfast.attacks.base import Attack
from deepfast.attacks.eot import EOTPGD
from deepfast.attacks.fab import FAB, FABT
from deepfast.attacks.fgsm import FGSM
from deepfast.attacks.pgd import BIM, MIFGSM, PGD
from deepfast.attacks.square import Square

ATTACKS: dict[str, type[Attack]] = {
    "fgsm": FGSM,
    "pgd": PGD,
    "bim": BIM,
    "mifgsm": MIFGSM,
    "apgd": APGD,
    "apgd-dlr": APGDDLR,
    "apgd-t": APGDT,
    "fab": FAB,
    "fab-t": FABT,
    "eot": EOTPGD,
    "square": Square,
}

# name -> the attacks it stands for, in order, each with its settings beyond the class defaults
PRESETS: dict[str, tuple[tuple[str, dict], ...]] = {
    "autoattack": (
        ("apgd", {"steps": 100, "loss": "ce"}),
        ("apgd-t", {"steps": 100, "targets": 9}),
        ("fab-t", {"steps": 100, "targets": 9}),
        ("square", {"queries": 5000, "p_init": 0.8}),
    ),
}

COMMON = ("seed", "amp")  # settings every attack takes


def known() -> str:
    return ", ".join([*ATTACKS, *PRESETS])


def factories(
    names: Sequence[str], settings: dict[str, object] | None = None, flag: Callable[[str], str] = str
) -> list[Callable[..., Attack]]:
    """The factories ``f(model, eps=, normalization=) -> Attack`` of the attacks ``names`` (presets
    expanded), each with its preset's settings and those of ``settings`` that it takes (None values
    skipped; seed and amp go to every attack). A name that is not known, or a setting that none of the
    attacks takes, is a ValueError (the setting named by ``flag(key)``)."""
    unknown = [n for n in names if n not in ATTACKS and n not in PRESETS]
    if unknown or not names:
        raise ValueError(f"unknown attack name {', '.join(map(repr, unknown)) or repr(names)}; known: {known()}")
    specs = [spec for n in names for spec in (PRESETS[n] if n in PRESETS else ((n, {}),))]
    kwargs = [dict(preset) for _, preset in specs]
    for key, value in (settings or {}).items():
        if value is None:
            continue
        takers = [
            i
            for i, (n, _) in enumerate(specs)
            if key in COMMON or key in inspect.signature(ATTACKS[n].__init__).parameters
        ]
        if not takers:
            raise ValueError(f"{flag(key)} does not apply to attack {', '.join(map(repr, names))}")
        for i in takers:
            kwargs[i][key] = value
    return [functools.partial(ATTACKS[n], **kw) for (n, _), kw in zip(specs, kwargs)]


def autoattack(norm: str = "inf", **settings: object) -> list[Callable[..., Attack]]:
    """The factories of AutoAttack's standard ensemble (APGD-CE, APGD-T, FAB-T, Square; the paper's
    settings) in the ``norm`` ball ("inf" or "2"); ``settings`` go to the attacks that take them
    (``steps=10``: APGD's, APGD-T's and FAB-T's, not Square's)."""
    return factories(["autoattack"], {"norm": norm, **settings})
