"""GAN losses on discriminator logits: the minimax game of Goodfellow et al. 2014 with the saturating
or non-saturating generator cost, and least squares (LSGAN, Mao et al. 2017)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from deepfast._validation import check_choice, check_float

GAN_MODES = ("non-saturating", "saturating", "lsgan")


class GANLoss(nn.Module):
    """The two costs of a GAN, from discriminator outputs of any shape (logits (N,) of a DCGAN
    discriminator, patch logits (N, 1, h, w) of a PatchGAN); every mean is over all elements.

    With D = sigmoid(logit) (modes "non-saturating" and "saturating", computed stably with softplus:
    log D = -softplus(-logit), log(1 - D) = -softplus(logit)):

        discriminator: J_D = -mean log D(x) - mean log(1 - D(G(z)))            (the minimax cost)
        generator:     J_G = -mean log D(G(z))        "non-saturating" (default, strong early gradients)
                       J_G =  mean log(1 - D(G(z)))   "saturating" (the minimax game's own cost)

    "lsgan" reads the outputs as scores s, not logits: J_D = mean (s(x) - 1)^2 + mean s(G(z))^2,
    J_G = mean (s(G(z)) - 1)^2 (the CycleGAN reference code's MSE against 1 and 0).

    Computed in float32 (also under autocast); returns 0-dim float32 tensors.
    """

    def __init__(self, mode: str = "non-saturating") -> None:
        super().__init__()
        check_choice(mode, "mode", GAN_MODES)
        self.mode = mode

    def discriminator(self, real: Tensor, fake: Tensor) -> Tensor:
        """J_D from the outputs on real images and on generated ones (detach them from G)."""
        check_float(real, "real")
        check_float(fake, "fake")
        real, fake = real.float(), fake.float()
        if self.mode == "lsgan":
            return (real - 1).square().mean() + fake.square().mean()
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def generator(self, fake: Tensor) -> Tensor:
        """J_G from the discriminator's outputs on generated images."""
        check_float(fake, "fake")
        fake = fake.float()
        if self.mode == "lsgan":
            return (fake - 1).square().mean()
        if self.mode == "saturating":
            return -F.softplus(fake).mean()
        return F.softplus(-fake).mean()

    def forward(self, fake: Tensor) -> Tensor:
        """The generator's cost (``generator``)."""
        return self.generator(fake)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
