"""VAE trainer: the negative ELBO (BCE reconstruction + beta * KL) with Adam, on images in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from deepfast.losses import VAELoss
from deepfast.models import VAE
from deepfast.train.trainer import Trainer


def images_of(batch: object) -> Tensor:
    """The images of a batch that may carry labels: x or (x, y) -> x."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@dataclass
class VAEOptions:
    """Options of the vae trainer: the KL weight ``beta`` (beta-VAE), latent size, conv width and the
    reconstruction loss ("bce" or "mse"; deepfast.losses.VAELoss)."""

    beta: float = 1.0
    latent_dim: int = 16
    width: int = 32
    reconstruction: str = "bce"


class VAETrainer(Trainer):
    """deepfast.models.VAE on a dataset of images in [0, 1]; losses "loss", "recon", "kl" (per image);
    held-out "val_loss"; samples decoded from fixed z ~ N(0, I)."""

    name = "vae"
    defaults = {"data": "digits", "epochs": 20, "batch_size": 128, "lr": 1e-3, "image_size": 32}
    Options = VAEOptions

    def build(self, channels: int) -> None:
        o = self.options
        self.vae = self.add_model(
            "vae", VAE(channels, self.config.image_size, o.latent_dim, o.width, impl=self.config.impl)
        )
        self.optimizers["vae"] = self.adam(self.vae)
        self.loss = VAELoss(o.beta, o.reconstruction)
        self.z = self.fixed_noise(self.num_samples(64), o.latent_dim)

    def train_step(self, batch: object) -> dict[str, Tensor]:
        x = images_of(batch)
        with self.autocast():
            recon, _, _ = self.nets["vae"](x)
            loss = self.loss(recon, x, self.vae.kl)
        self.backward(loss, self.optimizers["vae"])
        return {"loss": loss, **self.loss.terms}

    def evaluate(self) -> dict[str, float]:
        total, n = 0.0, 0
        with self.evaluating(self.vae):
            for batch in self.held_out_batches():
                x = images_of(batch)
                recon, _, _ = self.vae(x)
                total += self.loss(recon, x, self.vae.kl).item() * x.shape[0]
                n += x.shape[0]
        return {"val_loss": total / n}

    def samples(self) -> Tensor:
        with self.evaluating(self.vae):
            return self.vae.decode(self.z)
