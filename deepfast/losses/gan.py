"""GAN losses on discriminator logits: the minimax game of Goodfellow et al. 2014 with the saturating
or non-saturating generator cost, least squares (LSGAN, Mao et al. 2017) and hinge (Lim & Ye 2017);
one-sided label smoothing (Salimans et al. 2016)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from deepfast._validation import check_choice, check_float

GAN_MODES = ("non-saturating", "saturating", "lsgan", "hinge")


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

    "hinge" reads them as scores s too: J_D = mean relu(1 - s(x)) + mean relu(1 + s(G(z))),
    J_G = -mean s(G(z)).

    ``real_label`` r in (0, 1] (1: off) is one-sided label smoothing: the target of D on real images is
    r instead of 1, J_D's real term -mean [r log D(x) + (1 - r) log(1 - D(x))] (lsgan: mean (s(x) - r)^2).
    Generated images keep the target 0. Not with "hinge".

    Computed in float32 (also under autocast); returns 0-dim float32 tensors.
    """

    def __init__(self, mode: str = "non-saturating", real_label: float = 1.0) -> None:
        super().__init__()
        check_choice(mode, "mode", GAN_MODES)
        if not (isinstance(real_label, (int, float)) and 0.0 < real_label <= 1.0):
            raise ValueError(f"real_label must be a number in (0, 1], got {real_label!r}")
        if mode == "hinge" and real_label != 1.0:
            raise ValueError(f"real_label {real_label} (label smoothing) does not apply to mode 'hinge'")
        self.mode, self.real_label = mode, float(real_label)

    def discriminator(self, real: Tensor, fake: Tensor) -> Tensor:
        """J_D from the outputs on real images and on generated ones (detach them from G)."""
        check_float(real, "real")
        check_float(fake, "fake")
        real, fake, r = real.float(), fake.float(), self.real_label
        if self.mode == "lsgan":
            return (real - r).square().mean() + fake.square().mean()
        if self.mode == "hinge":
            return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        # r = 1 without the (1 - r) term: 0 * softplus(inf) would make an infinite logit NaN
        real_term = F.softplus(-real) if r == 1.0 else r * F.softplus(-real) + (1 - r) * F.softplus(real)
        return real_term.mean() + F.softplus(fake).mean()

    def generator(self, fake: Tensor) -> Tensor:
        """J_G from the discriminator's outputs on generated images."""
        check_float(fake, "fake")
        fake = fake.float()
        if self.mode == "lsgan":
            return (fake - 1).square().mean()
        if self.mode == "hinge":
            return -fake.mean()
        if self.mode == "saturating":
            return -F.softplus(fake).mean()
        return F.softplus(-fake).mean()

    def forward(self, fake: Tensor) -> Tensor:
        """The generator's cost (``generator``)."""
        return self.generator(fake)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, real_label={self.real_label}"
