"""BatchNorm2d / InstanceNorm2d followed by LeakyReLU (ReLU with negative_slope=0), as one fused layer.

Parameters and buffers have the names of nn.BatchNorm2d / nn.InstanceNorm2d (weight, bias,
running_mean, running_var, num_batches_tracked), so the state_dict of the standard layer loads into
these and back.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from deepfast._validation import check_choice
from deepfast.ops.norm_leaky_relu import batch_norm_leaky_relu, instance_norm_leaky_relu


def _check_4d(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected 4D input (N, C, H, W), got {x.dim()}D input")


class BatchNormLeakyReLU2d(_BatchNorm):
    """LeakyReLU(BatchNorm2d(x)): nn.BatchNorm2d + nn.LeakyReLU(negative_slope) in one fused op.

    Shapes: (N, C, H, W) -> (N, C, H, W), memory format kept (NCHW or channels_last).
    Training uses the statistics of the batch and updates the running ones (momentum=None: the
    cumulative average); eval uses the running ones (the batch ones without track_running_stats).
    ``inplace=True`` keeps only the output for backward (In-Place Activated BatchNorm; needs
    negative_slope > 0), weight clamped to |weight| >= 1e-5 (see deepfast.ops.norm_leaky_relu).
    """

    def __init__(
        self,
        num_features: int,
        negative_slope: float = 0.2,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        inplace: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.negative_slope = negative_slope
        self.inplace = inplace

    _check_input_dim = staticmethod(_check_4d)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        return batch_norm_leaky_relu(
            x,
            self.weight,
            self.bias,
            self.running_mean if use_running else None,
            self.running_var if use_running else None,
            training=batch_stats,
            momentum=momentum,
            eps=self.eps,
            negative_slope=self.negative_slope,
            inplace=self.inplace,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, negative_slope={self.negative_slope}, inplace={self.inplace}"


class InstanceNormLeakyReLU2d(_InstanceNorm):
    """LeakyReLU(InstanceNorm2d(x)): nn.InstanceNorm2d(affine, track_running_stats=False) +
    nn.LeakyReLU(negative_slope) in one fused op. Statistics per (n, c) plane, in training and eval.

    Shapes: (N, C, H, W) -> (N, C, H, W), memory format kept. ``inplace`` as in BatchNormLeakyReLU2d.
    """

    def __init__(
        self,
        num_features: int,
        negative_slope: float = 0.2,
        eps: float = 1e-5,
        affine: bool = False,
        inplace: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__(num_features, eps, 0.1, affine, False, device=device, dtype=dtype)
        self.negative_slope = negative_slope
        self.inplace = inplace

    _check_input_dim = staticmethod(_check_4d)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        return instance_norm_leaky_relu(
            x, self.weight, self.bias, eps=self.eps, negative_slope=self.negative_slope, inplace=self.inplace
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, negative_slope={self.negative_slope}, inplace={self.inplace}"


class ConvNormAct(nn.Module):
    """Conv2d (or ConvTranspose2d) -> fused norm + LeakyReLU: the block of DCGAN / CycleGAN / VAE nets.

    norm: "batch" (BatchNormLeakyReLU2d), "instance" (InstanceNormLeakyReLU2d, affine=False as in
    pix2pix/CycleGAN) or None (conv + LeakyReLU, ReLU for negative_slope=0). bias=None gives the conv
    a bias only without a norm (a norm cancels it). The conv is ``self.conv`` and the rest ``self.act``.
    Shapes: (N, in_ch, H, W) -> (N, out_ch, H', W').
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        *,
        transposed: bool = False,
        output_padding: int | tuple[int, int] = 0,
        norm: str | None = "batch",
        negative_slope: float = 0.2,
        bias: bool | None = None,
        padding_mode: str = "zeros",
        inplace: bool = False,
    ) -> None:
        super().__init__()
        check_choice(norm, "norm", ("batch", "instance", None))
        bias = norm is None if bias is None else bias
        if transposed:
            self.conv = nn.ConvTranspose2d(
                in_ch, out_ch, kernel_size, stride, padding, output_padding, bias=bias, padding_mode=padding_mode
            )
        else:
            self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, bias=bias, padding_mode=padding_mode)
        if norm == "batch":
            self.act = BatchNormLeakyReLU2d(out_ch, negative_slope, inplace=inplace)
        elif norm == "instance":
            self.act = InstanceNormLeakyReLU2d(out_ch, negative_slope, inplace=inplace)
        else:
            self.act = nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x))
