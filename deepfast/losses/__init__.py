"""Losses of generative models and robustness work, built on the fused ops."""

from deepfast.losses.cycle import CycleConsistencyLoss
from deepfast.losses.gan import GAN_MODES, GANLoss
from deepfast.losses.pool import ImagePool
from deepfast.losses.robust import adversarial_training_loss, logit_pairing_loss, trades_kl, trades_loss
from deepfast.losses.saliency import SaliencyLoss
from deepfast.losses.vae import VAELoss

__all__ = [
    "CycleConsistencyLoss",
    "GANLoss",
    "GAN_MODES",
    "ImagePool",
    "SaliencyLoss",
    "VAELoss",
    "adversarial_training_loss",
    "logit_pairing_loss",
    "trades_kl",
    "trades_loss",
]
