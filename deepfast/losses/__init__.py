"""Losses of generative models and robustness work, built on the fused ops."""

from deepfast.losses.cycle import CycleConsistencyLoss
from deepfast.losses.saliency import SaliencyLoss

__all__ = ["CycleConsistencyLoss", "SaliencyLoss"]
