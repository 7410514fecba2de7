"""Defenses against adversarial examples: adversarial training (Madry et al., logit pairing, TRADES) and
detection of adversarial inputs from a classifier's activations (SafetyNet-style)."""

from deepfast.defenses.adversarial_training import DEFENSES, TRAINING_ATTACKS, AdversarialTraining, TradesPGD
from deepfast.defenses.detection import (
    ADAPTIVE_LOSSES,
    ActivationDetector,
    AdaptivePGD,
    DetectionReport,
    detection_auc,
    detection_report,
    find_layer,
    fit_detector,
    recording,
)

__all__ = [
    "ADAPTIVE_LOSSES",
    "DEFENSES",
    "TRAINING_ATTACKS",
    "ActivationDetector",
    "AdaptivePGD",
    "AdversarialTraining",
    "DetectionReport",
    "TradesPGD",
    "detection_auc",
    "detection_report",
    "find_layer",
    "fit_detector",
    "recording",
]
