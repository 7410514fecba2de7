"""Losses of adversarial training: Madry-style adversarial training, adversarial logit pairing, TRADES.

Each takes the logits of the clean images and of their adversarial examples, both (N, K) floating
point with the same shape, and labels (N,) int64, and returns a 0-dim float32 loss (float64 for
float64 logits) averaged over the batch. CE is the mean cross-entropy, p = softmax(logits):

    adversarial_training_loss:  clean * CE(f(x), y) + lam * CE(f(x_adv), y)         (clean = 0 or 1)
    logit_pairing_loss:         CE(f(x), y) + lam * mean_i ||f(x_i) - f(x_adv_i)||_2^2
                       mixed:   (CE(f(x), y) + CE(f(x_adv), y)) / 2 + lam * mean_i ||f(x_i) - f(x_adv_i)||_2^2
    trades_loss:                CE(f(x), y) + beta * mean_i KL(p(x_i) || p(x_adv_i))

Gradients flow through both logits (the pairing and KL terms pull f(x) and f(x_adv) together).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from deepfast._validation import check_finite_float


def _checked(logits: Tensor, logits_adv: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Both logits as float32 (float64 stays float64), after checking shapes and dtypes."""
    for t, name in ((logits, "logits"), (logits_adv, "logits_adv")):
        if not isinstance(t, Tensor) or not t.dtype.is_floating_point or t.dim() != 2:
            got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a floating-point (N, K) tensor, got {got}")
    if logits_adv.shape != logits.shape:
        raise ValueError(
            f"logits_adv must have the shape of logits {tuple(logits.shape)}, got {tuple(logits_adv.shape)}"
        )
    if not isinstance(labels, Tensor) or tuple(labels.shape) != (logits.shape[0],) or labels.dtype.is_floating_point:
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an integer tensor of shape (N,) = ({logits.shape[0]},), got {got}")
    if logits.dtype == logits_adv.dtype == torch.float64:
        return logits, logits_adv
    return logits.float(), logits_adv.float()


def adversarial_training_loss(
    logits: Tensor, logits_adv: Tensor, labels: Tensor, lam: float = 1.0, clean: bool = True
) -> Tensor:
    """clean * CE(f(x), y) + lam * CE(f(x_adv), y). clean=False, lam=1: Madry et al. (2018);
    clean=True: Goodfellow et al.'s (2015) mix of clean and adversarial loss (their weights 1/2, 1/2 up to scale)."""
    lam = check_finite_float(lam, "lam", minimum=0)
    logits, logits_adv = _checked(logits, logits_adv, labels)
    loss = lam * F.cross_entropy(logits_adv, labels)
    return loss + F.cross_entropy(logits, labels) if clean else loss


def logit_pairing_loss(
    logits: Tensor, logits_adv: Tensor, labels: Tensor, lam: float = 1.0, mixed: bool = False
) -> Tensor:
    """Adversarial logit pairing (Kannan et al. 2018): CE(f(x), y) + lam * mean_i ||f(x_i) - f(x_adv_i)||^2.
    mixed=True is the paper's form: the cross-entropy of a mixed minibatch of clean and adversarial
    examples, (CE(f(x), y) + CE(f(x_adv), y)) / 2 here (the batch and all its adversarial examples), plus
    the pairing term."""
    lam = check_finite_float(lam, "lam", minimum=0)
    logits, logits_adv = _checked(logits, logits_adv, labels)
    pairing = (logits - logits_adv).square().sum(dim=1).mean()
    ce = F.cross_entropy(logits, labels)
    if mixed:
        ce = (ce + F.cross_entropy(logits_adv, labels)) / 2
    return ce + lam * pairing


def trades_kl(logits: Tensor, logits_adv: Tensor) -> Tensor:
    """mean_i KL(p(x_i) || p(x_adv_i)) = mean_i sum_k p_k(x_i) (log p_k(x_i) - log p_k(x_adv_i)), (N, K) -> 0-dim."""
    log_p, log_q = F.log_softmax(logits, dim=1), F.log_softmax(logits_adv, dim=1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


def trades_loss(logits: Tensor, logits_adv: Tensor, labels: Tensor, beta: float = 6.0) -> Tensor:
    """TRADES (Zhang et al. 2019): CE(f(x), y) + beta * mean_i KL(p(x_i) || p(x_adv_i)); beta = 6 is the
    paper's choice for MNIST and CIFAR-10 (its 1 / lambda)."""
    beta = check_finite_float(beta, "beta", minimum=0)
    logits, logits_adv = _checked(logits, logits_adv, labels)
    return F.cross_entropy(logits, labels) + beta * trades_kl(logits, logits_adv)
