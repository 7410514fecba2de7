"""Drop-in layers built on the fused ops."""

from deepfast.nn.convert import convert, fuse_conv_bn
from deepfast.nn.norm_leaky_relu import BatchNormLeakyReLU2d, ConvNormAct, InstanceNormLeakyReLU2d
from deepfast.nn.reparameterize import Reparameterize
from deepfast.nn.sync_norm import SyncBatchNormLeakyReLU2d, convert_sync_batchnorm

__all__ = [
    "BatchNormLeakyReLU2d",
    "ConvNormAct",
    "InstanceNormLeakyReLU2d",
    "Reparameterize",
    "SyncBatchNormLeakyReLU2d",
    "convert",
    "convert_sync_batchnorm",
    "fuse_conv_bn",
]
