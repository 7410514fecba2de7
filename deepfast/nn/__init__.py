"""Drop-in layers built on the fused ops."""

from deepfast.nn.convert import convert, fuse_conv_bn
from deepfast.nn.norm_act import BatchNormLeakyReLU2d, ConvNormAct, InstanceNormLeakyReLU2d
from deepfast.nn.reparameterize import Reparameterize

__all__ = [
    "BatchNormLeakyReLU2d",
    "ConvNormAct",
    "InstanceNormLeakyReLU2d",
    "Reparameterize",
    "convert",
    "fuse_conv_bn",
]
