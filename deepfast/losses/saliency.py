"""SaliencyLoss: the content-preserving saliency constraint of UTOM (Li et al. 2021) for unpaired
image translation, a soft-thresholded L1 between the foreground masks of real and translated images."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfast._validation import ValueRange, check_finite_float, check_float, check_value_range


class SaliencyLoss(nn.Module):
    """Saliency constraint of "Unsupervised content-preserving transformation for optical microscopy"
    (Li et al., Light Sci. Appl. 2021): a translation G should keep what is foreground where it is.

        m_tau(x) = sigmoid(k * (u(x) - tau)),   u(x) = (mean_c(x) - lo) / (hi - lo)  in [0, 1]
        loss     = w(epoch) * mean |m_tau_real(real) - m_tau_fake(translated)|

    with the mean over channels per pixel, then over batch and pixels, and (lo, hi) = ``value_range``
    (default (-1, 1), the range of CycleGAN's tanh generators). ``tau`` is relative to that range
    (0.5: mid-gray) and may be a pair (tau_real, tau_translated) when the two domains have different
    brightness (e.g. dark-field fluorescence vs bright-field stain); ``k`` is the slope in the same
    relative units (the mask goes from 0.12 to 0.88 over 4 / k of the range).

    Weight schedule: w(e) = weight * max(0, 1 - e / decay_epochs) (linear decay to 0 at
    ``decay_epochs``; constant ``weight`` when decay_epochs is None): call ``set_epoch(e)`` at the
    start of each epoch. Inputs real, translated: one shape (N, C, H, W), any float dtype (computed
    in it); returns a 0-dim tensor, differentiable in both.
    """

    def __init__(
        self,
        k: float = 100.0,
        tau: float | tuple[float, float] = 0.5,
        weight: float = 1.0,
        decay_epochs: int | None = None,
        value_range: ValueRange = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        check_finite_float(k, "k")
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k}")
        taus = tuple(tau) if isinstance(tau, (tuple, list)) else (tau, tau)
        if len(taus) != 2:
            raise ValueError(f"tau must be a float or a pair (tau_real, tau_translated), got {tau!r}")
        for t in taus:
            check_finite_float(t, "tau")
        check_finite_float(weight, "weight", minimum=0)
        if decay_epochs is not None and (
            isinstance(decay_epochs, bool) or not isinstance(decay_epochs, int) or decay_epochs < 1
        ):
            raise ValueError(f"decay_epochs must be a positive int or None, got {decay_epochs!r}")
        self.k = float(k)
        self.tau_real, self.tau_translated = (float(t) for t in taus)
        self.weight = float(weight)
        self.decay_epochs = decay_epochs
        self.value_range = check_value_range(value_range)
        self.epoch = 0

    def weight_at(self, epoch: int) -> float:
        """The weight w(epoch) of the schedule (see the class docstring)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        if self.decay_epochs is None:
            return self.weight
        return self.weight * max(0.0, 1.0 - epoch / self.decay_epochs)

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch whose weight ``forward`` uses."""
        self.weight_at(epoch)
        self.epoch = epoch

    @property
    def current_weight(self) -> float:
        return self.weight_at(self.epoch)

    def mask(self, x: Tensor, tau: float) -> Tensor:
        """Soft foreground mask of images x (N, C, H, W): (N, H, W) in (0, 1), sigmoid(k (u(x) - tau))."""
        lo, hi = self.value_range
        u = (x.mean(1) - lo) / (hi - lo)
        return torch.sigmoid(self.k * (u - tau))

    def forward(self, real: Tensor, translated: Tensor) -> Tensor:
        check_float(real, "real")
        check_float(translated, "translated")
        if real.dim() != 4 or real.shape != translated.shape:
            raise ValueError(
                f"real and translated must be image batches (N, C, H, W) of one shape, got {tuple(real.shape)}"
                f" and {tuple(translated.shape)}"
            )
        diff = (self.mask(real, self.tau_real) - self.mask(translated, self.tau_translated)).abs().mean()
        return diff * self.current_weight

    def extra_repr(self) -> str:
        return (
            f"k={self.k}, tau=({self.tau_real}, {self.tau_translated}), weight={self.weight}, "
            f"decay_epochs={self.decay_epochs}, value_range={self.value_range}, epoch={self.epoch}"
        )
