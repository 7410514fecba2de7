"""DCGAN trainer (Radford et al. 2015): alternating discriminator and generator steps, Adam 2e-4,
betas (0.5, 0.999), images in [-1, 1]."""

from __future__ import annotations

import torch
from torch import Tensor

from deepfast.losses import GANLoss
from deepfast.models import Discriminator, Generator
from deepfast.train.trainer import Trainer
from deepfast.train.vae import images_of

GAN_BETAS = (0.5, 0.999)


class DCGANTrainer(Trainer):
    """Per batch: D step on J_D(D(x), D(G(z)).detach()), then G step on J_G(D(G(z))) with D frozen
    (GANLoss, non-saturating by default). Losses "d_loss", "g_loss", and "d_real", "d_fake": the mean
    D(x) and D(G(z)) (probabilities; "lsgan": raw scores). Samples: G(z) for 64 fixed z."""

    name = "dcgan"
    value_range = (-1.0, 1.0)
    defaults = {"data": "digits", "epochs": 25, "batch_size": 64, "lr": 2e-4, "image_size": 32,
                "options": {"nz": 100, "ngf": 64, "ndf": 64, "loss": "non-saturating"}}

    def build(self, channels: int) -> None:
        o, size, impl = self.options, self.config.image_size, self.config.impl
        self.g = self.add_model("g", Generator(o["nz"], o["ngf"], channels, size, impl=impl))
        self.d = self.add_model("d", Discriminator(o["ndf"], channels, size, impl=impl))
        self.optimizers["g"] = self.adam(self.g, betas=GAN_BETAS)
        self.optimizers["d"] = self.adam(self.d, betas=GAN_BETAS)
        self.gan = GANLoss(o["loss"])
        self.z = self.fixed_noise(self.num_samples(64), o["nz"])

    def train_step(self, batch: object) -> dict[str, Tensor]:
        real = images_of(batch)
        z = torch.randn(real.shape[0], self.options["nz"], device=self.device)
        with self.autocast():
            fake = self.nets["g"](z)
            d_real, d_fake = self.nets["d"](real), self.nets["d"](fake.detach())
            d_loss = self.gan.discriminator(d_real, d_fake)
        self.backward(d_loss, self.optimizers["d"])
        with self.frozen(self.d), self.autocast():
            g_loss = self.gan.generator(self.frozen_net("d")(fake))
        self.backward(g_loss, self.optimizers["g"])
        prob = (lambda t: t.float()) if self.gan.mode == "lsgan" else (lambda t: torch.sigmoid(t.float()))
        return {"d_loss": d_loss, "g_loss": g_loss, "d_real": prob(d_real).mean(), "d_fake": prob(d_fake).mean()}

    def samples(self) -> Tensor:
        with self.evaluating(self.g):
            return self.g(self.z)
