"""Autoencoder and U-Net trainers: reconstruction, and denoising (noisy image in, clean image out)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deepfast.models import Autoencoder, UNet
from deepfast.train.trainer import Trainer
from deepfast.train.vae import images_of


class _ImageToImage(Trainer):
    """Shared by the two: the model maps source(x) to x (images in [0, 1]) under a mean BCE loss;
    held-out "val_loss" (fixed noise); the grid shows source, output and target rows of 16 held-out images."""

    def source(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The model's input for target x."""
        return x

    def output(self, inp: Tensor, net: nn.Module) -> Tensor:
        """The model's prediction in [0, 1]."""
        raise NotImplementedError

    def loss(self, x: Tensor, net: nn.Module, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def train_step(self, batch: object) -> dict[str, Tensor]:
        x = images_of(batch)
        with self.autocast():
            loss = self.loss(x, self.nets["model"])
        self.backward(loss, self.optimizers["model"])
        return {"loss": loss}

    def evaluate(self) -> dict[str, float]:
        total, n = 0.0, 0
        g = torch.Generator(self.device).manual_seed(self.config.seed)
        with self.evaluating(self.model):
            for batch in self.held_out_batches():
                x = images_of(batch)
                total += self.loss(x, self.model, g).item() * x.shape[0]
                n += x.shape[0]
        return {"val_loss": total / n}

    def samples(self) -> list[Tensor] | None:
        if self.held_out is None:
            return None
        n = min(self.num_samples(16), len(self.held_out))
        x = torch.stack([images_of(self.held_out[i]) for i in range(n)]).to(self.device)
        with self.evaluating(self.model):
            inp = self.source(x, torch.Generator(self.device).manual_seed(self.config.seed))
            return [inp, self.output(inp, self.model), x]


@dataclass
class AutoencoderOptions:
    """Options of the ae trainer: code size and conv width."""

    latent_dim: int = 32
    width: int = 32


class AutoencoderTrainer(_ImageToImage):
    """deepfast.models.Autoencoder: x -> code -> x, mean BCE."""

    name = "ae"
    defaults = {"data": "digits", "epochs": 20, "batch_size": 128, "lr": 1e-3, "image_size": 32}
    Options = AutoencoderOptions

    def build(self, channels: int) -> None:
        o = self.options
        self.model = self.add_model(
            "model", Autoencoder(channels, self.config.image_size, o.latent_dim, o.width, impl=self.config.impl)
        )
        self.optimizers["model"] = self.adam(self.model)

    def output(self, inp: Tensor, net: nn.Module) -> Tensor:
        return net(inp)

    def loss(self, x: Tensor, net: nn.Module, generator: torch.Generator | None = None) -> Tensor:
        return F.binary_cross_entropy(net(x).float(), x.float())


@dataclass
class UNetOptions:
    """Options of the unet trainer: the noise level ``sigma`` of the denoised inputs, width and depth."""

    sigma: float = 0.4
    width: int = 16
    depth: int = 3


class UNetTrainer(_ImageToImage):
    """deepfast.models.UNet as a denoiser: clamp(x + sigma * noise, 0, 1) -> logits of x, mean BCE."""

    name = "unet"
    defaults = {"data": "digits", "epochs": 15, "batch_size": 64, "lr": 1e-3, "image_size": 32}
    Options = UNetOptions

    def build(self, channels: int) -> None:
        o = self.options
        self.model = self.add_model("model", UNet(channels, channels, o.width, o.depth, impl=self.config.impl))
        self.optimizers["model"] = self.adam(self.model)

    def source(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + self.options.sigma * noise).clamp(0, 1)

    def output(self, inp: Tensor, net: nn.Module) -> Tensor:
        return torch.sigmoid(net(inp))

    def loss(self, x: Tensor, net: nn.Module, generator: torch.Generator | None = None) -> Tensor:
        return F.binary_cross_entropy_with_logits(net(self.source(x, generator)).float(), x.float())
