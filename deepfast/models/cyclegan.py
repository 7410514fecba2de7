"""CycleGAN generator (ResNet, Johnson et al.) and 70x70 PatchGAN discriminator, as in the CycleGAN
paper's reference code (junyanz/pytorch-CycleGAN-and-pix2pix, norm="instance", no dropout): convs
with bias (instance norm has no affine parameters), reflection padding, N(0, 0.02) init."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfast.models._blocks import check_impl, conv_norm_act, init_normal_, upsample_block


class ResnetBlock(nn.Module):
    """x + IN(conv3x3(ReLU(IN(conv3x3(x))))), reflection padding; the second instance norm, without an
    activation, is nn.InstanceNorm2d in both impls. (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, dim: int, impl: str) -> None:
        super().__init__()
        self.block = conv_norm_act(
            impl, dim, dim, 3, 1, 1, norm="instance", negative_slope=0.0, bias=True, padding_mode="reflect"
        )
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1, padding_mode="reflect")
        self.norm = nn.InstanceNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.norm(self.conv(self.block(x)))


class ResnetGenerator(nn.Module):
    """image (N, input_nc, H, W) -> image (N, output_nc, H, W) in (-1, 1); H, W multiples of 4.

    7x7 conv, two stride-2 downsamplings, n_blocks (6 for 128x128, 9 for 256x256) residual blocks at
    4 * ngf channels, two 2x upsamplings, 7x7 conv and tanh; instance norm + ReLU after every conv but
    the last. ``upsample``: "transposed" (3x3 stride-2 transposed convs, the reference code) or
    "resize" (nearest 2x resize + 3x3 reflection-padded conv, Odena et al. 2016: no checkerboard
    artifacts; see ``upsample_block``); the same parameters either way. ngf=64, 3 -> 3 channels:
    7,837,699 (6 blocks) / 11,378,179 (9) parameters.
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        impl: str = "fused",
        upsample: str = "transposed",
        skip: bool = False,
    ) -> None:
        super().__init__()
        check_impl(impl)
        kw = dict(norm="instance", negative_slope=0.0, bias=True)
        layers: list[nn.Module] = [conv_norm_act(impl, input_nc, ngf, 7, 1, 3, padding_mode="reflect", **kw)]
        layers += [conv_norm_act(impl, ngf * 2**i, ngf * 2 ** (i + 1), 3, 2, 1, **kw) for i in range(2)]
        layers += [ResnetBlock(ngf * 4, impl) for _ in range(n_blocks)]
        layers += [
            upsample_block(
                impl, ngf * 2 ** (2 - i), ngf * 2 ** (1 - i), upsample, kernel_size=3, padding_mode="reflect", **kw
            )
            for i in range(2)
        ]
        layers.append(nn.Conv2d(ngf, output_nc, 7, 1, 3, padding_mode="reflect"))
        self.model = nn.Sequential(*layers)
        self.skip = skip and input_nc == output_nc
        init_normal_(self)

    def forward(self, x: Tensor) -> Tensor:
        h = self.model(x)
        return torch.tanh(h + x if self.skip else h)


class PixelGenerator(nn.Module):
    """image (N, input_nc, H, W) -> image (N, output_nc, H, W) in (-1, 1), each output pixel a function of
    the same input pixel's channels only: ``depth`` 1x1 convs (an MLP applied to every pixel), LeakyReLU(0.2)
    between them, no norm (an image's statistics would make a pixel depend on the others), then tanh;
    ``skip`` adds the input before the tanh as ResnetGenerator's. For translations that change colour
    and keep every structure, such as re-staining: it cannot paint texture, noise or checkerboards.
    Init: the hidden 1x1 convs keep torch's default (Kaiming-uniform: without a norm, N(0, 0.02) weights
    would shrink the activations and their gradients 10x a layer), the last one N(0, 0.02) with a zero bias
    (with ``skip`` the generator starts near tanh(x)). (input_nc + 1) width + (depth - 2)(width + 1) width
    + (width + 1) output_nc parameters.
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        width: int = 64,
        depth: int = 3,
        impl: str = "fused",
        skip: bool = False,
    ) -> None:
        super().__init__()
        check_impl(impl)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an int >= 2 (1x1 convs), got {depth!r}")
        widths = [input_nc] + [width] * (depth - 1)
        layers: list[nn.Module] = [
            conv_norm_act(impl, a, b, 1, norm=None, negative_slope=0.2) for a, b in zip(widths, widths[1:])
        ]
        layers.append(init_normal_(nn.Conv2d(width, output_nc, 1)))
        self.model = nn.Sequential(*layers)
        self.skip = skip and input_nc == output_nc

    def forward(self, x: Tensor) -> Tensor:
        h = self.model(x)
        return torch.tanh(h + x if self.skip else h)


class PatchDiscriminator(nn.Module):
    """image (N, input_nc, H, W) -> patch logits (N, 1, H/8 - 2, W/8 - 2) (30x30 for 256x256); each
    logit sees a 70x70 patch (n_layers=3). 4x4 convs: stride 2 doubling the width (capped at 8 * ndf)
    n_layers times, then stride 1, then to one channel; instance norm on all but the first and last,
    LeakyReLU(0.2). ndf=64, 3 channels: 2,764,737 parameters.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, impl: str = "fused") -> None:
        super().__init__()
        check_impl(impl)
        widths = [ndf * min(2**i, 8) for i in range(n_layers + 1)]
        layers: list[nn.Module] = [conv_norm_act(impl, input_nc, ndf, 4, 2, 1, norm=None, negative_slope=0.2)]
        layers += [
            conv_norm_act(
                impl, a, b, 4, 2 if i < n_layers - 1 else 1, 1, norm="instance", negative_slope=0.2, bias=True
            )
            for i, (a, b) in enumerate(zip(widths, widths[1:]))
        ]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 1)]
        self.model = nn.Sequential(*layers)
        init_normal_(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
