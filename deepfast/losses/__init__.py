"""Losses of generative models and robustness work, built on the fused ops."""

from deepfast.losses.cycle import CycleConsistencyLoss

__all__ = ["CycleConsistencyLoss"]
