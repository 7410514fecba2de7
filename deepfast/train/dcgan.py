"""DCGAN trainer (Radford et al. 2015): alternating discriminator and generator steps, Adam 2e-4,
betas (0.5, 0.999), images in [-1, 1]; and its class-conditional variant (cdcgan)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepfast.augment import check_policy, diff_augment
from deepfast.losses import GANLoss
from deepfast.models import ConditionalDiscriminator, ConditionalGenerator, Discriminator, Generator
from deepfast.nn import recompute_batchnorm
from deepfast.train.trainer import Trainer
from deepfast.train.vae import images_of

GAN_BETAS = (0.5, 0.999)
EMA_STAT_IMAGES, EMA_STAT_BATCH = 1024, 128  # at most that many fresh z for the EMA generator's BatchNorm statistics


def top_scores(scores: Tensor, fraction: float) -> Tensor:
    """The max(1, round(fraction N)) largest of D's scores (N,), those J_G is taken over in top-k
    training (Sinha et al. 2020); all N (the same tensor) for fraction 1."""
    k = max(1, round(fraction * scores.shape[0]))
    return scores if k == scores.shape[0] else scores.topk(k).values


@dataclass
class DCGANOptions:
    """Options of the dcgan trainer (see DCGANTrainer)."""

    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    loss: str = "non-saturating"
    upsample: str = "transposed"
    ema: float = 0.0
    augment: str = ""
    extra_layers: int = 0
    real_label: float = 1.0
    spectral_norm: bool = False
    topk: float = 1.0


class DCGANTrainer(Trainer):
    """Per batch: D step on J_D(D(x), D(G(z)).detach()), then G step on J_G(D(G(z))) with D frozen
    (GANLoss, non-saturating by default). Losses "d_loss", "g_loss", and "d_real", "d_fake": the mean
    D(x) and D(G(z)) (probabilities; "lsgan" and "hinge": raw scores). Samples: G(z) for 64 fixed z.

    Options: ``upsample`` ("transposed", the paper's, or "resize"; see deepfast.models.Generator);
    ``ema`` (decay d in [0, 1), 0: off): a copy of G whose weights follow w_ema <- d w_ema + (1 - d) w
    after every G step, the generator averaged over the last ~1 / (1 - d) steps (Yazici et al. 2019),
    its BatchNorm statistics recomputed for those weights after every epoch (``end_epoch``);
    ``generator`` (and the samples) is that copy then, model "g_ema";
    ``augment``: a DiffAugment policy (Zhao et al. 2020, deepfast.augment: "translation,cutout", "" off)
    applied to every image D sees, real and generated, in both steps; ``loss`` (a GANLoss mode) and
    ``real_label`` (GANLoss's one-sided label smoothing, 1: off); ``spectral_norm`` (D's convs, see
    deepfast.models.Discriminator); ``topk`` (fraction f in (0, 1], 1: off): J_G over only the
    round(f N) generated images of the batch that D scores highest (Sinha et al. 2020)."""

    name = "dcgan"
    value_range = (-1.0, 1.0)
    defaults = {"data": "digits", "epochs": 25, "batch_size": 64, "lr": 2e-4, "image_size": 32}
    Options = DCGANOptions
    sample_count = 64

    def networks(self, channels: int) -> tuple[nn.Module, nn.Module]:
        """The generator and the discriminator for images of ``channels``."""
        o, size, impl = self.options, self.config.image_size, self.config.impl
        return (
            Generator(o.nz, o.ngf, channels, size, impl=impl, upsample=o.upsample, extra_layers=o.extra_layers),
            Discriminator(o.ndf, channels, size, impl=impl, extra_layers=o.extra_layers, spectral_norm=o.spectral_norm),
        )

    def conditions(self, batch: object) -> tuple[Tensor, ...]:
        """What G and D take besides z and images: nothing here, the labels in the conditional trainer."""
        return ()

    def random_conditions(self, n: int, gen: torch.Generator) -> tuple[Tensor, ...]:
        """``conditions`` for n generated images without a batch: nothing here, random labels there."""
        return ()

    def build(self, channels: int) -> None:
        o = self.options
        if not (isinstance(o.ema, (int, float)) and 0.0 <= o.ema < 1.0):
            raise ValueError(f"option ema must be a decay in [0, 1), got {o.ema!r}")
        check_policy(o.augment)
        if not 0.0 < o.topk <= 1.0:
            raise ValueError(f"option topk must be a fraction in (0, 1], got {o.topk!r}")
        g, d = self.networks(channels)
        self.g = self.add_model("g", g)
        self.d = self.add_model("d", d)
        self.generator = self.g
        if o.ema > 0:
            self.generator = self.g_ema = self.add_model("g_ema", copy.deepcopy(g).requires_grad_(False))
        self.optimizers["g"] = self.adam(self.g, betas=GAN_BETAS)
        self.optimizers["d"] = self.adam(self.d, betas=GAN_BETAS)
        self.gan = GANLoss(o.loss, o.real_label)
        self.z = self.fixed_noise(self.num_samples(self.sample_count), o.nz)

    def train_step(self, batch: object) -> dict[str, Tensor]:
        real, cond = images_of(batch), self.conditions(batch)
        z = torch.randn(real.shape[0], self.options.nz, device=self.device)
        policy = self.options.augment
        aug = (lambda t: diff_augment(t, policy)) if policy else (lambda t: t)
        with self.autocast():
            fake = self.nets["g"](z, *cond)
            d_real, d_fake = self.nets["d"](aug(real), *cond), self.nets["d"](aug(fake.detach()), *cond)
            d_loss = self.gan.discriminator(d_real, d_fake)
        self.backward(d_loss, self.optimizers["d"])
        with self.frozen(self.d), self.autocast():
            scores = self.frozen_net("d")(aug(fake), *cond)
            g_loss = self.gan.generator(top_scores(scores, self.options.topk))
        self.backward(g_loss, self.optimizers["g"])
        if self.generator is not self.g:
            self.update_ema()
        prob = (lambda t: t.float()) if self.gan.mode in ("lsgan", "hinge") else (lambda t: torch.sigmoid(t.float()))
        return {"d_loss": d_loss, "g_loss": g_loss, "d_real": prob(d_real).mean(), "d_fake": prob(d_fake).mean()}

    @torch.no_grad()
    def update_ema(self) -> None:
        """w_ema <- ema * w_ema + (1 - ema) * w for G's parameters; its buffers copied (until end_epoch)."""
        torch._foreach_lerp_(list(self.g_ema.parameters()), list(self.g.parameters()), 1.0 - self.options.ema)
        for b_ema, b in zip(self.g_ema.buffers(), self.g.buffers()):
            b_ema.copy_(b)

    def end_epoch(self) -> None:
        """With ema: the EMA generator's BatchNorm statistics recomputed for its own weights
        (deepfast.nn.recompute_batchnorm) from as many fresh z as the epoch has images, at most
        EMA_STAT_IMAGES, in batches of EMA_STAT_BATCH, drawn from a generator seeded by (seed, epoch) so
        that the run's own random stream is untouched."""
        if self.generator is self.g:
            return
        gen = torch.Generator(self.device).manual_seed(self.config.seed * 1000 + self.epoch)
        sizes = torch.arange(min(len(self.train_data), EMA_STAT_IMAGES)).split(EMA_STAT_BATCH)

        def batches():
            for n in map(len, sizes):
                z = torch.randn(n, self.options.nz, generator=gen, device=self.device)
                yield (z, *self.random_conditions(n, gen))

        with self.autocast():
            recompute_batchnorm(self.g_ema, batches())

    def samples(self) -> Tensor:
        with self.evaluating(self.generator):
            return self.generator(self.z)


@dataclass
class CDCGANOptions(DCGANOptions):
    """Options of the cdcgan trainer: the dcgan trainer's and the number of classes."""

    num_classes: int = 10


class CDCGANTrainer(DCGANTrainer):
    """Class-conditional DCGAN (Mirza & Osindero 2014): deepfast.models.ConditionalGenerator G(z, y)
    and the projection discriminator ConditionalDiscriminator D(x, y) (Miyato & Koyama 2018), on
    labelled images; each step generates the batch's own labels, so fakes follow the data's class
    frequencies. Steps, losses and options as ``dcgan``'s, plus ``num_classes``. Samples: 100 fixed z,
    the labels in rows of one class (10 per class)."""

    name = "cdcgan"
    Options = CDCGANOptions
    sample_count = 100

    def networks(self, channels: int) -> tuple[nn.Module, nn.Module]:
        o, size, impl = self.options, self.config.image_size, self.config.impl
        return (
            ConditionalGenerator(
                o.num_classes, o.nz, o.ngf, channels, size, impl=impl, upsample=o.upsample, extra_layers=o.extra_layers
            ),
            ConditionalDiscriminator(
                o.num_classes,
                o.ndf,
                channels,
                size,
                impl=impl,
                extra_layers=o.extra_layers,
                spectral_norm=o.spectral_norm,
            ),
        )

    def conditions(self, batch: object) -> tuple[Tensor, ...]:
        if not isinstance(batch, (tuple, list)):
            raise ValueError(f"cdcgan needs labelled data; {self.config.data!r} gives images without labels")
        return (batch[1],)

    def random_conditions(self, n: int, gen: torch.Generator) -> tuple[Tensor, ...]:
        return (torch.randint(self.options.num_classes, (n,), generator=gen, device=self.device),)

    def build(self, channels: int) -> None:
        super().build(channels)
        n, k = self.z.shape[0], self.options.num_classes
        self.sample_labels = (torch.arange(n) * k // n).to(self.device)  # rows of one class each

    def samples(self) -> Tensor:
        with self.evaluating(self.generator):
            return self.generator(self.z, self.sample_labels)
