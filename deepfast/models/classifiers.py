"""Small classifiers: LeNet-5 for 1x32x32 digits and a ResNet-18 for 32x32 RGB (CIFAR)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from deepfast.models._blocks import check_impl, conv_norm_act


class LeNet(nn.Module):
    """LeNet-5 with BatchNorm + ReLU after each conv: (N, 1, 32, 32) -> logits (N, num_classes).
    conv5x5(6) -> pool -> conv5x5(16) -> pool -> 120 -> 84 -> num_classes; 61,728 parameters for 10
    classes (LeNet-5's 61,706 with the 22 conv biases replaced by 44 BatchNorm affine parameters)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, impl: str = "fused") -> None:
        super().__init__()
        check_impl(impl)
        self.features = nn.Sequential(
            conv_norm_act(impl, in_channels, 6, 5, norm="batch", negative_slope=0.0),
            nn.MaxPool2d(2),
            conv_norm_act(impl, 6, 16, 5, norm="batch", negative_slope=0.0),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ReLU(x' + BN(conv3x3(ReLU(BN(conv3x3(x)))))), x' = x or a 1x1 conv + BN projection when the
    stride or width changes; the norms without an activation are nn.BatchNorm2d in both impls.
    (N, in_ch, H, W) -> (N, out_ch, H / stride, W / stride)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, impl: str) -> None:
        super().__init__()
        self.block = conv_norm_act(impl, in_ch, out_ch, 3, stride, 1, norm="batch", negative_slope=0.0)
        self.conv = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(self.block(x))) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs (3x3 stem, no max pool): (N, 3, 32, 32) -> logits (N, num_classes).
    Four stages of two BasicBlocks at width, 2, 4, 8 x width (strides 1, 2, 2, 2), global average
    pool, linear. width=64, 10 classes: 11,173,962 parameters."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64, impl: str = "fused") -> None:
        super().__init__()
        check_impl(impl)
        self.stem = conv_norm_act(impl, in_channels, width, 3, 1, 1, norm="batch", negative_slope=0.0)
        blocks: list[nn.Module] = []
        in_ch = width
        for i in range(4):
            out_ch = width * 2**i
            blocks += [BasicBlock(in_ch, out_ch, 1 if i == 0 else 2, impl), BasicBlock(out_ch, out_ch, 1, impl)]
            in_ch = out_ch
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.layers(self.stem(x)).mean(dim=(2, 3)))
