"""The trainers by name, and what runs or reloads them."""

from __future__ import annotations

import torch

from deepfast.train.autoencoder import AutoencoderTrainer, UNetTrainer
from deepfast.train.checkpoint import load_checkpoint, load_state
from deepfast.train.classifier import ClassifierTrainer
from deepfast.train.config import TrainConfig
from deepfast.train.cyclegan import CycleGANTrainer
from deepfast.train.dcgan import CDCGANTrainer, DCGANTrainer
from deepfast.train.trainer import RunResult, Trainer
from deepfast.train.vae import VAETrainer

TRAINERS: dict[str, type[Trainer]] = {
    cls.name: cls
    for cls in (
        AutoencoderTrainer,
        UNetTrainer,
        VAETrainer,
        DCGANTrainer,
        CDCGANTrainer,
        CycleGANTrainer,
        ClassifierTrainer,
    )
}


def make_trainer(config: TrainConfig) -> Trainer:
    """The trainer named by ``config.model``; ValueError for an unknown one."""
    if config.model not in TRAINERS:
        raise ValueError(f"unknown model {config.model!r}; known: {', '.join(TRAINERS)}")
    return TRAINERS[config.model](config)


def train(config: TrainConfig | None = None, resume: bool = False, overwrite: bool = False, **fields) -> RunResult:
    """Runs a training: ``train(model="vae", epochs=5, out="runs/vae")`` or with a TrainConfig
    (``Trainer.fit``: resume, overwrite)."""
    config = config or TrainConfig(**fields)
    return make_trainer(config).fit(resume, overwrite)


def load_trainer(path: str, device: str | None = None, trusted: bool = False, **overrides) -> Trainer:
    """The trainer of checkpoint ``path``, its models built, weights loaded, in eval mode, on ``device``
    (default: the CPU); ``overrides`` replace config fields (e.g. samples=16). The file is loaded
    without running code from it (``load_checkpoint``; ``trusted``: see there)."""
    ckpt = load_checkpoint(path, trusted=trusted)
    config = TrainConfig.from_dict(
        {**ckpt["config"], "compile": False, "sync_bn": False, "device": device, **overrides}
    )
    trainer = make_trainer(config)
    trainer.device = torch.device(device or "cpu")
    trainer.setup(ckpt["channels"])
    for key, model in trainer.models.items():
        load_state(model, ckpt["models"].get(key), f"model {key!r}", path)
        model.eval()
    return trainer
