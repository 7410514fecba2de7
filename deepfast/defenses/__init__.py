"""Defenses against adversarial examples: adversarial training (Madry et al., logit pairing, TRADES) and
detection of adversarial inputs from a classifier's activations (SafetyNet-style)."""

from deepfast.defenses.adversarial_training import DEFENSES, TRAINING_ATTACKS, AdversarialTraining, TradesPGD

__all__ = ["DEFENSES", "TRAINING_ATTACKS", "AdversarialTraining", "TradesPGD"]
