"""Reference models built on the fused layers; each takes impl="fused" (deepfast layers, the default)
or impl="reference" (plain torch layers) with the same state_dict keys."""

from deepfast.models.autoencoder import Autoencoder, UNet
from deepfast.models.classifiers import LeNet, ResNet18
from deepfast.models.cyclegan import PatchDiscriminator, PixelGenerator, ResnetGenerator
from deepfast.models.dcgan import ConditionalDiscriminator, ConditionalGenerator, Discriminator, Generator
from deepfast.models.vae import VAE

__all__ = [
    "VAE",
    "Generator",
    "Discriminator",
    "ConditionalGenerator",
    "ConditionalDiscriminator",
    "ResnetGenerator",
    "PixelGenerator",
    "PatchDiscriminator",
    "Autoencoder",
    "UNet",
    "LeNet",
    "ResNet18",
]
