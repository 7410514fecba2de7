"""Classifier trainer: cross-entropy with Adam; LeNet for 1-channel images, ResNet-18 for RGB; optionally
adversarial training (deepfast.defenses.AdversarialTraining)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from torch.nn import functional as F

from deepfast.augment import colour_jitter
from deepfast.defenses.adversarial_training import AdversarialTraining
from deepfast.models import LeNet, ResNet18
from deepfast.train.trainer import Trainer


@dataclass
class ClassifierOptions:
    """Options of the classifier trainer (see ClassifierTrainer)."""

    arch: str = "auto"
    num_classes: int = 10
    width: int = 64
    adversarial: str | None = None
    defense: str = "at"
    eps: float = 0.2
    adv_steps: int = 10
    adv_alpha: float | None = None
    adv_lambda: float | None = None
    eps_warmup: float = 0.0
    colour_jitter: float = 0.0


class ClassifierTrainer(Trainer):
    """Images in [0, 1] (the box attacks work in) with labels. arch "auto" is LeNet for 1 channel at
    32x32, ResNet-18 otherwise. Losses "loss", "acc" (training batch); held-out "val_loss", "val_acc".

    Adversarial training (option ``adversarial`` = "pgd" or "fgsm", None: standard training): each step
    trains on examples made by that attack against the current model, with the loss of option
    ``defense`` ("at", "madry", "alp", "alp_mixed", "trades"; see deepfast.defenses.adversarial_training),
    radius ``eps`` (Linf, [0, 1] pixels), ``adv_steps`` PGD steps of size ``adv_alpha`` (None: 2.5 eps /
    steps), weight ``adv_lambda`` (None: 1, TRADES' beta 6), warm-up ``eps_warmup`` (epochs W, 0: none;
    the step that ends t = epoch + (batch + 1) / batches_per_epoch epochs attacks with s * eps and
    s * alpha, s = min(1, t / W)). It logs "adv_acc" (training batch) and "val_adv_acc" (held-out robust
    accuracy under the same attack with early stop at the full eps, seeded; PGD on the cross-entropy for
    "trades").

    ``colour_jitter`` s > 0: each training batch through deepfast.augment.colour_jitter of strength s (channels
    shuffled, random per-channel gains and shifts), for a classifier that is to ignore colour (e.g. one trained
    on translations into a domain of random colours); 0: off."""

    name = "classifier"
    defaults = {"data": "digits", "epochs": 10, "batch_size": 64, "lr": 1e-3, "image_size": 32}
    Options = ClassifierOptions

    def build(self, channels: int) -> None:
        o, impl = self.options, self.config.impl
        arch = o.arch if o.arch != "auto" else ("lenet" if channels == 1 else "resnet18")
        if arch == "lenet":
            model = LeNet(channels, o.num_classes, impl=impl)
        elif arch == "resnet18":
            model = ResNet18(o.num_classes, channels, o.width, impl=impl)
        else:
            raise ValueError(f'option arch must be "auto", "lenet" or "resnet18", got {o.arch!r}')
        if not 0 <= o.colour_jitter <= 1:
            raise ValueError(f"option colour_jitter must be in [0, 1], got {o.colour_jitter!r}")
        self.model = self.add_model("model", model)
        self.optimizers["model"] = self.adam(self.model)
        self.defense = None
        if o.adversarial is not None:
            self.defense = AdversarialTraining(
                o.defense,
                o.adversarial,
                o.eps,
                o.adv_steps,
                o.adv_alpha,
                o.adv_lambda,
                o.eps_warmup,
                name_prefix="option ",
            )
            # the raw model (eval mode, no DDP, no compile), under the run's --amp
            self.attack = self.defense.make_attack(self.model, amp=self.config.amp)
            self.full_radius = (self.attack.eps, self.attack.alpha)

    def train_step(self, batch: object) -> dict[str, Tensor]:
        if not isinstance(batch, (tuple, list)):
            raise ValueError(f"classifier needs labelled data; {self.config.data!r} gives images without labels")
        x, y = batch
        if self.options.colour_jitter > 0:
            x = colour_jitter(x, self.options.colour_jitter, self.value_range)
        if self.defense is None:
            with self.autocast():
                logits = self.nets["model"](x)
                loss = F.cross_entropy(logits.float(), y)
            self.backward(loss, self.optimizers["model"])
            return {"loss": loss, "acc": (logits.argmax(1) == y).float().mean()}
        s = self.defense.warmup_scale(self.epoch + (self.batch + 1) / self.batches_per_epoch)
        self.attack.eps, self.attack.alpha = s * self.full_radius[0], s * self.full_radius[1]
        x_adv = self.attack(x, y)
        with self.autocast():
            loss, logits, logits_adv = self.defense.loss(self.nets["model"], x, x_adv, y)
        self.backward(loss, self.optimizers["model"])
        losses = {"loss": loss, "adv_acc": (logits_adv.argmax(1) == y).float().mean()}
        if logits is not None:
            losses["acc"] = (logits.argmax(1) == y).float().mean()
        return losses

    def evaluate(self) -> dict[str, float]:
        loss, correct, robust, n = 0.0, 0, 0, 0
        attack = (
            None
            if self.defense is None
            else self.defense.make_attack(self.model, seed=self.config.seed, amp=self.config.amp, evaluation=True)
        )
        with self.evaluating(self.model):
            for x, y in self.held_out_batches():
                logits = self.model(x).float()
                loss += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
                n += y.numel()
                if attack is not None:
                    robust += (self.model(attack(x, y)).argmax(1) == y).sum().item()
        metrics = {"val_loss": loss / n, "val_acc": correct / n}
        if attack is not None:
            metrics["val_adv_acc"] = robust / n
        return metrics
