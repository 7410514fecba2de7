"""The VAE loss: reconstruction + beta * KL (the negative ELBO for beta = 1, beta-VAE otherwise)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from deepfast._validation import check_choice, check_finite_float, check_float

RECONSTRUCTIONS = ("bce", "mse")


class VAELoss(nn.Module):
    """loss = recon + beta * kl, both summed over an image's elements / latents and averaged over the batch.

    recon: "bce" sum BCE(recon, x) (Bernoulli decoder; images and reconstructions in [0, 1]) or "mse"
    sum (recon - x)^2. ``kl`` is the 0-dim batch-mean KL that deepfast.models.VAE leaves in ``.kl``
    (deepfast.ops.reparameterize_kl). Computed in float32 (BCE is not autocast-safe), so recon, x and
    kl may each be of any floating dtype (under autocast the decoder gives bfloat16 or float16 while the
    images stay float32); ``terms`` holds the detached "recon" and "kl" of the last call. Shapes:
    recon, x (N, ...), on one device; returns a 0-dim float32.
    """

    terms: dict[str, Tensor]

    def __init__(self, beta: float = 1.0, reconstruction: str = "bce") -> None:
        super().__init__()
        check_finite_float(beta, "beta", minimum=0)
        check_choice(reconstruction, "reconstruction", RECONSTRUCTIONS)
        self.beta, self.reconstruction = beta, reconstruction
        self.terms = {}

    def forward(self, recon: Tensor, x: Tensor, kl: Tensor) -> Tensor:
        check_float(recon, "recon")
        check_float(x, "x")
        if x.shape != recon.shape or x.device != recon.device:
            raise ValueError(
                f"x must have the shape and device of recon {tuple(recon.shape)} on {recon.device}, "
                f"got {tuple(x.shape)} on {x.device}"
            )
        check_float(kl, "kl")
        if kl.dim() != 0:
            raise ValueError(f"kl must be 0-dim (the batch-mean KL), got shape {tuple(kl.shape)}")
        recon, x = recon.float(), x.float()
        if self.reconstruction == "bce":
            try:
                total = F.binary_cross_entropy(recon, x, reduction="sum")
            except RuntimeError as err:  # torch names its arguments input (recon) and target (x)
                name = "recon" if "input" in str(err) else "x"
                raise ValueError(
                    f'{name} must hold values in [0, 1] for reconstruction="bce" (a Bernoulli decoder\'s '
                    f"probabilities and images in [0, 1]; NaN is not): {err}"
                ) from None
        else:
            total = F.mse_loss(recon, x, reduction="sum")
        rec = total / recon.shape[0]
        kl = kl.float()
        self.terms = {"recon": rec.detach(), "kl": kl.detach()}
        return rec + self.beta * kl

    def extra_repr(self) -> str:
        return f"beta={self.beta}, reconstruction={self.reconstruction!r}"
