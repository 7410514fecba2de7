"""DCGAN generator and discriminator (Radford et al. 2015), for 32x32 and 64x64 images."""

from __future__ import annotations

from torch import Tensor, nn

from deepfast.models._blocks import check_impl, conv_norm_act, init_normal_, num_halvings


class Generator(nn.Module):
    """z (N, nz) or (N, nz, 1, 1) -> image (N, nc, S, S) in (-1, 1).

    4x4 transposed conv from z, then stride-2 transposed convs halving the width, each with
    BatchNorm + ReLU; the last one to nc channels with tanh. N(0, 0.02) init. At S=64, nz=100,
    ngf=64, nc=3: 3,576,704 parameters.
    """

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3, image_size: int = 64, impl: str = "fused") -> None:
        super().__init__()
        check_impl(impl)
        n = num_halvings(image_size) - 3
        widths = [ngf * 2**i for i in reversed(range(n + 1))]
        layers: list[nn.Module] = [conv_norm_act(impl, nz, widths[0], 4, 1, 0, transposed=True, norm="batch",
                                                 negative_slope=0.0)]
        layers += [conv_norm_act(impl, a, b, 4, 2, 1, transposed=True, norm="batch", negative_slope=0.0)
                   for a, b in zip(widths, widths[1:])]
        layers += [nn.ConvTranspose2d(widths[-1], nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.nz = nz
        init_normal_(self)

    def forward(self, z: Tensor) -> Tensor:
        return self.main(z.view(z.shape[0], self.nz, 1, 1))


class Discriminator(nn.Module):
    """image (N, nc, S, S) -> logits (N,) (use BCEWithLogitsLoss; sigmoid gives the probability).

    Stride-2 4x4 convs doubling the width with LeakyReLU(0.2), BatchNorm on all but the first,
    then a 4x4 conv to one logit. N(0, 0.02) init. At S=64, ndf=64, nc=3: 2,765,568 parameters.
    """

    def __init__(self, ndf: int = 64, nc: int = 3, image_size: int = 64, impl: str = "fused") -> None:
        super().__init__()
        check_impl(impl)
        n = num_halvings(image_size) - 3
        widths = [ndf * 2**i for i in range(n + 1)]
        layers: list[nn.Module] = [conv_norm_act(impl, nc, ndf, 4, 2, 1, norm=None, bias=False, negative_slope=0.2)]
        layers += [conv_norm_act(impl, a, b, 4, 2, 1, norm="batch", negative_slope=0.2)
                   for a, b in zip(widths, widths[1:])]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False), nn.Flatten(0)]
        self.main = nn.Sequential(*layers)
        init_normal_(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)
