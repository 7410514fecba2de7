"""Deterministic autoencoder (the VAE's encoder and decoder) and a U-Net with skip connections."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfast.models._blocks import check_impl, conv_norm_act
from deepfast.models.vae import ConvDecoder, ConvEncoder


class Autoencoder(nn.Module):
    """x (N, C, S, S) -> reconstruction (N, C, S, S) in (0, 1) through a code (N, latent_dim); S = 32 or 64."""

    def __init__(
        self, channels: int = 1, image_size: int = 32, latent_dim: int = 32, width: int = 32, impl: str = "fused"
    ) -> None:
        super().__init__()
        check_impl(impl)
        self.encoder = ConvEncoder(channels, image_size, width, impl)
        self.fc = nn.Linear(self.encoder.out_features, latent_dim)
        self.decoder = ConvDecoder(latent_dim, channels, image_size, width, impl)

    def encode(self, x: Tensor) -> Tensor:
        """(N, C, S, S) -> (N, latent_dim)."""
        return self.fc(self.encoder(x))

    def decode(self, z: Tensor) -> Tensor:
        """(N, latent_dim) -> (N, C, S, S)."""
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


class DoubleConv(nn.Sequential):
    """Two 3x3 conv + BatchNorm + ReLU. (N, in_ch, H, W) -> (N, out_ch, H, W)."""

    def __init__(self, in_ch: int, out_ch: int, impl: str) -> None:
        super().__init__(
            conv_norm_act(impl, in_ch, out_ch, 3, 1, 1, norm="batch", negative_slope=0.0),
            conv_norm_act(impl, out_ch, out_ch, 3, 1, 1, norm="batch", negative_slope=0.0),
        )


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015, padded convs, BatchNorm): x (N, in_channels, H, W) ->
    logits (N, out_channels, H, W), H and W multiples of 2**depth. Each of the depth levels halves the
    size by max pooling and doubles the width; the decoder upsamples by 2x2 transposed convs and
    concatenates the encoder features of the same size (skip connections)."""

    def __init__(
        self, in_channels: int = 1, out_channels: int = 1, width: int = 32, depth: int = 3, impl: str = "fused"
    ) -> None:
        super().__init__()
        check_impl(impl)
        widths = [width * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(in_channels, width, impl)
        self.down = nn.ModuleList(DoubleConv(a, b, impl) for a, b in zip(widths, widths[1:]))
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, 2) for a, b in zip(widths, widths[1:]))
        self.dec = nn.ModuleList(DoubleConv(2 * a, a, impl) for a in widths[:-1])
        self.pool = nn.MaxPool2d(2)
        self.out = nn.Conv2d(width, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.inc(x)]
        for down in self.down:
            skips.append(down(self.pool(skips[-1])))
        h = skips.pop()
        for up, dec in zip(reversed(self.up), reversed(self.dec)):
            h = dec(torch.cat([skips.pop(), up(h)], dim=1))
        return self.out(h)
