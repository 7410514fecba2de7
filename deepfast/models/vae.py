"""Convolutional VAE: conv encoder -> (mu, logvar) -> Reparameterize (fused sampling + KL) -> conv decoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfast.models._blocks import check_impl, conv_norm_act, norm_act, num_halvings, reparameterize


class ConvEncoder(nn.Sequential):
    """Stride-2 4x4 convs with BatchNorm + LeakyReLU(0.2) down to 4x4, flattened.
    (N, channels, S, S) -> (N, widths[-1] * 16), widths = width * 2**i, S = 32 or 64."""

    def __init__(self, channels: int, image_size: int, width: int, impl: str) -> None:
        n = num_halvings(image_size) - 2
        widths = [channels] + [width * 2**i for i in range(n)]
        super().__init__(
            *(conv_norm_act(impl, a, b, 4, 2, 1, norm="batch", negative_slope=0.2) for a, b in zip(widths, widths[1:])),
            nn.Flatten(),
        )
        self.out_features = widths[-1] * 16


class ConvDecoder(nn.Sequential):
    """Linear to a 4x4 map, BatchNorm + ReLU, stride-2 transposed convs up to the image, sigmoid.
    (N, latent_dim) -> (N, channels, S, S), values in (0, 1)."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int, impl: str) -> None:
        n = num_halvings(image_size) - 2
        widths = [width * 2**i for i in reversed(range(n))]
        layers: list[nn.Module] = [
            nn.Linear(latent_dim, widths[0] * 16),
            nn.Unflatten(1, (widths[0], 4, 4)),
            norm_act(impl, widths[0], 0.0),
        ]
        layers += [
            conv_norm_act(impl, a, b, 4, 2, 1, transposed=True, norm="batch", negative_slope=0.0)
            for a, b in zip(widths, widths[1:])
        ]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Sigmoid()]
        super().__init__(*layers)


class VAE(nn.Module):
    """Variational autoencoder for 1x32x32 (digits) or 3x64x64 images (any channels, size 32 or 64).

    forward: x (N, C, S, S) -> (recon (N, C, S, S) in (0, 1), mu (N, latent_dim), logvar (N, latent_dim));
    the KL term of that call (batchmean: summed over latents, averaged over the batch) is ``self.kl``.
    In eval mode z = mu. impl: "fused" (deepfast layers) or "reference" (plain torch), same state_dict.
    """

    def __init__(
        self, channels: int = 1, image_size: int = 32, latent_dim: int = 32, width: int = 32, impl: str = "fused"
    ) -> None:
        super().__init__()
        check_impl(impl)
        self.latent_dim = latent_dim
        self.encoder = ConvEncoder(channels, image_size, width, impl)
        self.fc_mu = nn.Linear(self.encoder.out_features, latent_dim)
        self.fc_logvar = nn.Linear(self.encoder.out_features, latent_dim)
        self.reparameterize = reparameterize(impl)
        self.decoder = ConvDecoder(latent_dim, channels, image_size, width, impl)

    @property
    def kl(self) -> Tensor | None:
        """KL(q(z|x) || N(0, I)) of the last forward, 0-dim (None before the first call)."""
        return self.reparameterize.kl

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, C, S, S) -> (mu, logvar), each (N, latent_dim)."""
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        """(N, latent_dim) -> (N, C, S, S) in (0, 1)."""
        return self.decoder(z)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """n images decoded from z ~ N(0, I): (n, C, S, S). Call eval() first (in training mode the
        BatchNorms use and update the statistics of the batch)."""
        param = self.fc_mu.weight
        return self.decode(torch.randn(n, self.latent_dim, device=param.device, dtype=param.dtype))
