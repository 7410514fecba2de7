"""Layer builders shared by the models: one builder per block picks the fused (deepfast) or the
reference (plain torch) layer classes, with the same child names and so the same state_dict keys."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deepfast._validation import check_choice
from deepfast.nn import BatchNormLeakyReLU2d, ConvNormAct, InstanceNormLeakyReLU2d, Reparameterize
from deepfast.ops.reparameterize_kl import reparameterize_kl_reference

IMPLS = ("fused", "reference")
UPSAMPLINGS = ("resize", "transposed")


class ReferenceBatchNormLeakyReLU2d(nn.BatchNorm2d):
    """Reference of BatchNormLeakyReLU2d: nn.BatchNorm2d then F.leaky_relu. (N, C, H, W) -> same."""

    def __init__(self, num_features: int, negative_slope: float = 0.2) -> None:
        super().__init__(num_features)
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(super().forward(x), self.negative_slope)


class ReferenceInstanceNormLeakyReLU2d(nn.InstanceNorm2d):
    """Reference of InstanceNormLeakyReLU2d: nn.InstanceNorm2d then F.leaky_relu. (N, C, H, W) -> same."""

    def __init__(self, num_features: int, negative_slope: float = 0.2) -> None:
        super().__init__(num_features)
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(super().forward(x), self.negative_slope)


class ReferenceConvNormAct(ConvNormAct):
    """ConvNormAct with the norm + activation as plain torch layers (children ``conv`` and ``act``, so
    the state_dict keys of ConvNormAct); norm=None is ConvNormAct itself (conv + nn.LeakyReLU / nn.ReLU)."""

    def __init__(
        self, in_ch: int, out_ch: int, *args, norm: str | None = "batch", negative_slope: float = 0.2, **kwargs
    ) -> None:
        super().__init__(in_ch, out_ch, *args, norm=norm, negative_slope=negative_slope, **kwargs)
        if norm == "batch":
            self.act = ReferenceBatchNormLeakyReLU2d(out_ch, negative_slope)
        elif norm == "instance":
            self.act = ReferenceInstanceNormLeakyReLU2d(out_ch, negative_slope)


class ReferenceReparameterize(Reparameterize):
    """Reparameterize in plain torch: z = mu + eps * exp(logvar / 2) and the KL term ``self.kl``."""

    def forward(self, mu: Tensor, logvar: Tensor) -> Tensor:
        if self.training or self.sample_in_eval:
            eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device)
        else:
            eps = torch.zeros_like(mu)
        z, self.kl = reparameterize_kl_reference(mu, logvar, eps, reduction=self.reduction)
        return z


def check_impl(impl: str) -> None:
    check_choice(impl, "impl", IMPLS)


def conv_norm_act(
    impl: str, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, **kwargs
) -> ConvNormAct:
    """Conv -> norm -> LeakyReLU block (ReLU: negative_slope=0), kwargs as deepfast.nn.ConvNormAct.
    (N, in_ch, H, W) -> (N, out_ch, H', W')."""
    check_impl(impl)
    cls = ConvNormAct if impl == "fused" else ReferenceConvNormAct
    return cls(in_ch, out_ch, kernel_size, stride, padding, **kwargs)


def upsample_block(
    impl: str, in_ch: int, out_ch: int, mode: str, kernel_size: int = 4, padding_mode: str = "zeros", **kwargs
) -> nn.Module:
    """2x upsampling by a conv -> norm -> activation block (kwargs as ``conv_norm_act``):
    (N, in_ch, H, W) -> (N, out_ch, 2H, 2W).

    mode "transposed": a stride-2 transposed conv of ``kernel_size`` (4 in DCGAN, 3 + output padding
    in CycleGAN's reference code); its kernel overlaps unevenly between output pixels, which draws
    checkerboard patterns. "resize": nearest-neighbour 2x resize, then a 3x3 conv (padding_mode) -- the
    resize-convolution of Odena et al. 2016, which has no such pattern."""
    check_choice(mode, "upsample", UPSAMPLINGS)
    if mode == "transposed":
        return conv_norm_act(
            impl, in_ch, out_ch, kernel_size, 2, 1, transposed=True, output_padding=4 - kernel_size, **kwargs
        )
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv_norm_act(impl, in_ch, out_ch, 3, 1, 1, padding_mode=padding_mode, **kwargs),
    )


def norm_act(impl: str, num_features: int, negative_slope: float, norm: str = "batch") -> nn.Module:
    """Norm -> LeakyReLU on its own, norm "batch" or "instance". (N, C, H, W) -> (N, C, H, W)."""
    check_impl(impl)
    check_choice(norm, "norm", ("batch", "instance"))
    if norm == "batch":
        cls = BatchNormLeakyReLU2d if impl == "fused" else ReferenceBatchNormLeakyReLU2d
    else:
        cls = InstanceNormLeakyReLU2d if impl == "fused" else ReferenceInstanceNormLeakyReLU2d
    return cls(num_features, negative_slope)


def reparameterize(impl: str, reduction: str = "batchmean") -> Reparameterize:
    """The VAE sampling head: deepfast.nn.Reparameterize (fused) or its plain torch reference."""
    check_impl(impl)
    return (Reparameterize if impl == "fused" else ReferenceReparameterize)(reduction)


def num_halvings(image_size: int, sizes: tuple[int, ...] = (32, 64)) -> int:
    """log2(image_size) for the supported sizes; ValueError for the others."""
    check_choice(image_size, "image_size", sizes)
    return int(math.log2(image_size))


@torch.no_grad()
def init_normal_(model: nn.Module, std: float = 0.02) -> nn.Module:
    """DCGAN / CycleGAN init: conv weights N(0, std), biases 0; BatchNorm weights N(1, std), biases 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return model
