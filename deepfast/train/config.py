"""TrainConfig: every setting of a training run, saved with its checkpoints."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from deepfast.amp import check_amp


@dataclass
class TrainConfig:
    """Settings of one run. None means the trainer's default (``Trainer.defaults``: the paper's values).

    batch_size is the global batch: under torchrun each of the W processes takes batch_size / W.
    ``options`` holds trainer-specific settings (e.g. {"beta": 4.0} for the VAE, see each trainer's
    ``defaults``); unknown keys are an error.
    """

    model: str = "vae"
    data: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    out: str | None = None
    seed: int = 0
    device: str | None = None  # None: cuda when available (the process's local rank), else cpu
    amp: str | None = None  # "bf16" or "fp16"
    channels_last: bool = False
    compile: bool = False
    backend: str | None = None  # force a deepfast backend (deepfast.use_backend)
    impl: str = "fused"  # "fused" deepfast layers or "reference" plain torch
    sync_bn: bool = False
    image_size: int | None = None
    max_batches: int | None = None  # per epoch; for quick runs and tests
    sample_every: int = 1  # epochs between PNG grids; 0: none
    samples: int | None = None  # images (or image pairs) in a grid; None: 64 generated, 16 translated
    progress: bool = True
    options: dict = field(default_factory=dict)

    def check(self) -> None:
        """Raises ValueError naming the first setting out of range."""
        for name in ("epochs", "batch_size", "image_size", "max_batches", "samples"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive finite float, got {self.lr!r}")
        check_amp(self.amp)
        if self.impl not in ("fused", "reference"):
            raise ValueError(f'impl must be "fused" or "reference", got {self.impl!r}')
        if not isinstance(self.sample_every, int) or self.sample_every < 0:
            raise ValueError(f"sample_every must be an int >= 0, got {self.sample_every!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class NoOptions:
    """A trainer without options of its own."""


def check_option(name: str, value: object, annotation: str, default: object) -> None:
    """A trainer option must have the type its options field declares (``annotation``, e.g. "int" or
    "float | None"): a number (an int for "int"), a bool, a str, or None where the field allows it.
    ValueError naming the option."""
    types = [t.strip() for t in annotation.split("|")]
    if value is None and "None" in types:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok, kind = {
        "bool": (isinstance(value, bool), "True or False"),
        "int": (number and isinstance(value, int), "an int"),
        "float": (number, "a number"),
        "str": (isinstance(value, str), "a string"),
    }[types[0]]
    if not ok:
        kind += " or None" if "None" in types else ""
        raise ValueError(f"option {name} must be {kind} (default {default!r}), got {value!r}")


def options_from_dict(cls: type, given: dict, trainer: str) -> object:
    """The options dataclass ``cls`` of ``trainer`` with the values of ``given`` ({option: value}, as
    TrainConfig.options holds them) over its defaults. ValueError naming an unknown option or one of the
    wrong type (see check_option)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(given) - set(fields)
    if unknown:
        raise ValueError(
            f"unknown option(s) for {trainer}: {', '.join(sorted(unknown))} (known: {', '.join(fields) or 'none'})"
        )
    for key, value in given.items():
        check_option(key, value, str(fields[key].type), fields[key].default)
    return cls(**given)
