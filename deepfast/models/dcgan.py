"""DCGAN generator and discriminator (Radford et al. 2015), for 8x8 to 64x64 images."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfast._validation import check_choice
from deepfast.models._blocks import UPSAMPLINGS, check_impl, conv_norm_act, init_normal_, num_halvings, upsample_block

GAN_SIZES = (8, 16, 32, 64)


def check_extra_layers(extra_layers: object) -> None:
    """extra_layers must be an int >= 0 (bools refused)."""
    if isinstance(extra_layers, bool) or not isinstance(extra_layers, int) or extra_layers < 0:
        raise ValueError(f"extra_layers must be an int >= 0, got {extra_layers!r}")


class Generator(nn.Module):
    """z (N, nz) or (N, nz, 1, 1) -> image (N, nc, S, S) in (-1, 1).

    4x4 transposed conv from z, then 2x upsamplings halving the width, each with BatchNorm + ReLU;
    the last one to nc channels with tanh. ``upsample``: "transposed" (4x4 stride-2 transposed convs,
    the paper's) or "resize" (nearest 2x resize + 3x3 conv, Odena et al. 2016; see
    ``upsample_block``). ``extra_layers`` 3x3 stride-1 conv + BatchNorm + ReLU blocks (ngf wide) before
    the last upsampling, at S/2 (the n_extra_layers of the WGAN reference DCGAN). S in 8, 16, 32, 64.
    N(0, 0.02) init. At S=64, nz=100, ngf=64, nc=3: 3,576,704 parameters (transposed).
    """

    def __init__(
        self,
        nz: int = 100,
        ngf: int = 64,
        nc: int = 3,
        image_size: int = 64,
        impl: str = "fused",
        upsample: str = "transposed",
        extra_layers: int = 0,
    ) -> None:
        super().__init__()
        check_impl(impl)
        check_choice(upsample, "upsample", UPSAMPLINGS)
        check_extra_layers(extra_layers)
        n = num_halvings(image_size, GAN_SIZES) - 3
        widths = [ngf * 2**i for i in reversed(range(n + 1))]
        layers: list[nn.Module] = [
            conv_norm_act(impl, nz, widths[0], 4, 1, 0, transposed=True, norm="batch", negative_slope=0.0)
        ]
        layers += [
            upsample_block(impl, a, b, upsample, norm="batch", negative_slope=0.0) for a, b in zip(widths, widths[1:])
        ]
        layers += [
            conv_norm_act(impl, widths[-1], widths[-1], 3, 1, 1, norm="batch", negative_slope=0.0)
            for _ in range(extra_layers)
        ]
        if upsample == "transposed":
            layers.append(nn.ConvTranspose2d(widths[-1], nc, 4, 2, 1, bias=False))
        else:
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(widths[-1], nc, 3, 1, 1, bias=False)]
        layers.append(nn.Tanh())
        self.main = nn.Sequential(*layers)
        self.nz = nz
        init_normal_(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.main(z.view(z.shape[0], self.nz, 1, 1))


class Discriminator(nn.Module):
    """image (N, nc, S, S) -> logits (N,) (use BCEWithLogitsLoss; sigmoid gives the probability).

    Stride-2 4x4 convs doubling the width with LeakyReLU(0.2), BatchNorm on all but the first,
    then a 4x4 conv to one logit; ``extra_layers`` 3x3 stride-1 conv + BatchNorm + LeakyReLU blocks (ndf
    wide) after the first conv, at S/2. S in 8, 16, 32, 64. N(0, 0.02) init. At S=64, ndf=64, nc=3:
    2,765,568 parameters. ``spectral_norm``: every conv weight W used as W / sigma(W), its largest
    singular value estimated by one power iteration a training forward (Miyato et al. 2018; the
    parameter is then conv.parametrizations.weight.original).
    """

    def __init__(
        self,
        ndf: int = 64,
        nc: int = 3,
        image_size: int = 64,
        impl: str = "fused",
        extra_layers: int = 0,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        check_impl(impl)
        check_extra_layers(extra_layers)
        n = num_halvings(image_size, GAN_SIZES) - 3
        widths = [ndf * 2**i for i in range(n + 1)]
        layers: list[nn.Module] = [conv_norm_act(impl, nc, ndf, 4, 2, 1, norm=None, bias=False, negative_slope=0.2)]
        layers += [
            conv_norm_act(impl, ndf, ndf, 3, 1, 1, norm="batch", negative_slope=0.2) for _ in range(extra_layers)
        ]
        layers += [
            conv_norm_act(impl, a, b, 4, 2, 1, norm="batch", negative_slope=0.2) for a, b in zip(widths, widths[1:])
        ]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False), nn.Flatten(0)]
        self.main = nn.Sequential(*layers)
        init_normal_(self)
        if not isinstance(spectral_norm, bool):
            raise ValueError(f"spectral_norm must be True or False, got {spectral_norm!r}")
        for m in self.modules() if spectral_norm else ():
            if isinstance(m, nn.Conv2d):
                nn.utils.parametrizations.spectral_norm(m)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


def check_labels(labels: object, n: int, num_classes: int) -> None:
    """labels must be int64 class indices (n,) in [0, num_classes)."""
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or tuple(labels.shape) != (n,):
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        dtype = labels.dtype if isinstance(labels, Tensor) else ""
        raise ValueError(f"labels must be an int64 tensor of shape ({n},), got {dtype} {shape}")
    if n and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
        raise ValueError(
            f"labels must be in [0, {num_classes}), got values in [{int(labels.min())}, {int(labels.max())}]"
        )


class ConditionalGenerator(Generator):
    """Class-conditional DCGAN generator: (z (N, nz), labels (N,) int64) -> image (N, nc, S, S) in (-1, 1).

    The Generator above fed [z, E(y)] (its first layer sees nz + embed_dim inputs), E a learned
    embedding (num_classes, embed_dim), embed_dim = num_classes by default; other arguments as Generator's.
    """

    def __init__(
        self,
        num_classes: int = 10,
        nz: int = 100,
        ngf: int = 64,
        nc: int = 3,
        image_size: int = 64,
        impl: str = "fused",
        upsample: str = "transposed",
        embed_dim: int | None = None,
        extra_layers: int = 0,
    ) -> None:
        embed_dim = embed_dim or num_classes
        super().__init__(nz + embed_dim, ngf, nc, image_size, impl, upsample, extra_layers)
        self.nz, self.num_classes = nz, num_classes
        self.embed = nn.Embedding(num_classes, embed_dim)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        check_labels(labels, z.shape[0], self.num_classes)
        h = torch.cat([z.reshape(z.shape[0], self.nz), self.embed(labels).to(z.dtype)], dim=1)
        return self.main(h[:, :, None, None])


class ConditionalDiscriminator(Discriminator):
    """Projection discriminator (Miyato & Koyama 2018): (image (N, nc, S, S), labels (N,) int64) ->
    logits (N,),

        D(x, y) = w . phi(x) + <E(y), sum_hw phi(x)>

    phi(x) the Discriminator's last hidden features (N, 8 ndf, 4, 4) at S=64 / (N, 4 ndf, 4, 4) at 32,
    w its final 4x4 conv, E a learned embedding (num_classes, channels of phi), N(0, 0.02) init.
    ``spectral_norm`` as Discriminator's (the convs; E is not normalized).
    """

    def __init__(
        self,
        num_classes: int = 10,
        ndf: int = 64,
        nc: int = 3,
        image_size: int = 64,
        impl: str = "fused",
        extra_layers: int = 0,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__(ndf, nc, image_size, impl, extra_layers, spectral_norm)
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, self.main[-2].in_channels)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        check_labels(labels, x.shape[0], self.num_classes)
        h = self.main[:-2](x)
        return self.main[-2:](h) + (self.embed(labels).to(h.dtype) * h.sum((2, 3))).sum(1)
