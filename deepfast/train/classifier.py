"""Classifier trainer: cross-entropy with Adam; LeNet for 1-channel images, ResNet-18 for RGB."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from deepfast.models import LeNet, ResNet18
from deepfast.train.trainer import Trainer


class ClassifierTrainer(Trainer):
    """Images in [0, 1] (the box attacks work in) with labels. arch "auto" is LeNet for 1 channel at
    32x32, ResNet-18 otherwise. Losses "loss", "acc" (training batch); held-out "val_loss", "val_acc"."""

    name = "classifier"
    defaults = {"data": "digits", "epochs": 10, "batch_size": 64, "lr": 1e-3, "image_size": 32,
                "options": {"arch": "auto", "num_classes": 10, "width": 64}}

    def build(self, channels: int) -> None:
        o, impl = self.options, self.config.impl
        arch = o["arch"] if o["arch"] != "auto" else ("lenet" if channels == 1 else "resnet18")
        if arch == "lenet":
            model = LeNet(channels, o["num_classes"], impl=impl)
        elif arch == "resnet18":
            model = ResNet18(o["num_classes"], channels, o["width"], impl=impl)
        else:
            raise ValueError(f'option arch must be "auto", "lenet" or "resnet18", got {o["arch"]!r}')
        self.model = self.add_model("model", model)
        self.optimizers["model"] = self.adam(self.model)

    def train_step(self, batch: object) -> dict[str, Tensor]:
        if not isinstance(batch, (tuple, list)):
            raise ValueError(f"classifier needs labelled data; {self.config.data!r} gives images without labels")
        x, y = batch
        with self.autocast():
            logits = self.nets["model"](x)
            loss = F.cross_entropy(logits.float(), y)
        self.backward(loss, self.optimizers["model"])
        return {"loss": loss, "acc": (logits.argmax(1) == y).float().mean()}

    def evaluate(self) -> dict[str, float]:
        loss, correct, n = 0.0, 0, 0
        with self.evaluating(self.model):
            for x, y in self.held_out_batches():
                logits = self.model(x).float()
                loss += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
                n += y.numel()
        return {"val_loss": loss / n, "val_acc": correct / n}
