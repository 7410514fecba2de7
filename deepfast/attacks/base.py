"""The Attack base class: input checks, normalization, eval mode, device, targets and the success test.

An attack is called as ``adv = atk(images, labels)``:

- ``images``: float tensor (N, C, H, W) (any (N, ...) with N >= 1 works) with values in [0, 1];
  ``labels``: int64 tensor (N,) of class indices (may be None when ``target`` is a tensor, an int or
  a function that does not need them).
- The model sees ``(x - mean) / std`` when ``normalization=(mean, std)`` (one value per channel, or
  one for all), so that attacks and their eps live in [0, 1] pixel space.
- The model runs in eval mode; the mode of every submodule is restored afterwards. The attack runs on
  the model's device; its iterate, steps and projections stay in the dtype of ``images`` (only the
  model's input is cast to the dtype of its parameters), so the eps ball and the box [0, 1] hold in
  that dtype whatever the model's dtype or ``amp``. It returns a tensor of the device and dtype of
  ``images``. It never changes the model's parameters or their ``.grad``: gradients are taken with
  ``torch.autograd.grad`` with respect to the input only, and the parameters stop requiring grad
  during the attack (their flags are restored afterwards), which saves the model's backward the
  work of their gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deepfast._inference import eval_mode
from deepfast._validation import check_finite_float
from deepfast.amp import autocast, check_amp
from deepfast.attacks.targets import Target, check_target, resolve_target

Normalization = tuple[Sequence[float] | float | Tensor, Sequence[float] | float | Tensor]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model with neither."""
    for t in chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating-point parameter (or buffer); None for a model with neither."""
    for t in chain(model.parameters(), model.buffers()):
        if t.dtype.is_floating_point:
            return t.dtype
    return None


def check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_images(images: object) -> None:
    """images: a floating tensor (N, ...) with N >= 1, finite values in [0, 1]."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.dtype.is_floating_point:
        raise TypeError(f"images must be a floating-point tensor in [0, 1], got dtype {images.dtype}")
    if images.dim() < 2 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, ...) with N >= 1, e.g. (N, C, H, W), got {tuple(images.shape)}")
    if images.requires_grad:
        raise ValueError("images must not require grad (pass images.detach())")
    lo, hi = torch.aminmax(images)
    if not (bool(lo >= 0) and bool(hi <= 1)):  # also NaN
        raise ValueError(
            f"images must hold values in [0, 1], got values in [{lo.item():.4g}, {hi.item():.4g}] "
            "(for a model trained on normalized inputs pass normalization=(mean, std))"
        )


def check_labels(labels: object, n: int, name: str = "labels") -> None:
    """labels: an integer tensor of shape (N,)."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of class indices, got dtype {labels.dtype}")
    if tuple(labels.shape) != (n,):
        raise ValueError(f"{name} must have shape (N,) = ({n},) for {n} images, got {tuple(labels.shape)}")


def check_classes(lo: int, hi: int, k: int, name: str = "labels") -> None:
    """Class indices whose smallest is ``lo`` and largest ``hi`` must lie in [0, k) for a model of k classes."""
    if lo < 0 or hi >= k:
        raise ValueError(
            f"{name} must hold class indices in [0, {k}) for a model of {k} classes, got values in [{lo}, {hi}]"
        )


def check_finite_logits(logits: Tensor) -> None:
    """The model's logits must be finite: with NaN or inf, losses, gradients and the success test mean nothing."""
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("model must return finite logits, got NaN or inf (check the model and its weights)")


def _normal_tensor(t: Tensor) -> Tensor:
    """t, or a copy of it where t was made under torch.inference_mode (autograd cannot save those)."""
    return t.clone() if t.is_inference() else t


def _channel_stats(value: object, name: str) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    if t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise ValueError(f"normalization {name} must hold one finite value per channel (or one for all)")
    return t.view(1, -1, 1, 1) if t.numel() > 1 else t.view(())


class Attack:
    """Base of every attack: ``adv = atk(images, labels)``.

    Args:
        model: a classifier, (N, ...) images -> (N, num_classes) logits.
        eps: the perturbation budget (Linf or L2 norm in [0, 1] pixel space), finite, >= 0.
        target: None (untargeted: make the prediction differ from ``labels``) or a target mode (see
            ``deepfast.attacks.targets``): a tensor (N,) of target classes, an int (one class for all),
            a function (images, labels) -> targets, "least_likely" or "random".
        normalization: (mean, std) the model expects: it sees (x - mean) / std; one value per channel
            or one for all.
        seed: seeds a torch.Generator on the model's device for every call (reproducible attacks);
            None uses the global random state.
        amp: "bf16" or "fp16": the model runs under ``torch.autocast`` in that dtype (its logits are
            cast to float32; the images, the gradients and the steps stay in the images' dtype).
            fp16 gradients of very confident samples can underflow to 0 (those samples do not move):
            prefer "bf16". None: the model's dtype throughout.

    Subclasses implement ``_attack(x, goal, targeted, generator) -> x_adv`` on the model's device, with
    x (N, ...) in [0, 1] in the images' dtype and goal (N,) int64: the labels (untargeted) or the
    targets (targeted).
    """

    black_box: ClassVar[bool] = False  # True for attacks that only read the model's outputs

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        target: Target = None,
        normalization: Normalization | None = None,
        seed: int | None = None,
        amp: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.eps = check_finite_float(eps, "eps", minimum=0)
        self.target = check_target(target)
        self.amp = check_amp(amp)
        self.num_classes: int | None = None  # K of the model's logits, once seen
        self._goal_range: tuple[tuple[int, int], str] | None = None  # (min, max) of the call's goal, unchecked
        self._first_forward = False  # True from a call's start to its first forward (whose logits are checked)
        self.mean = self.std = None
        self._stats: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}  # (mean, std) per device
        if normalization is not None:
            if not (isinstance(normalization, (tuple, list)) and len(normalization) == 2):
                raise ValueError(f"normalization must be a pair (mean, std), got {normalization!r}")
            self.mean = _channel_stats(normalization[0], "mean")
            self.std = _channel_stats(normalization[1], "std")
            if not bool((self.std > 0).all()):
                raise ValueError("normalization std must be > 0 in every channel")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        self.seed = seed

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"{self.name}(eps={self.eps:.4g}, target={self.target!r})"

    # --- what subclasses use ---------------------------------------------------------------------

    def logits(self, x: Tensor) -> Tensor:
        """The model's logits (N, K) for images x (N, ...) in [0, 1], normalization applied (in x's
        dtype), then cast to the dtype of the model's parameters (differentiably: the gradient comes
        back in x's dtype); float32 under ``amp``. Reads nothing back from the device (a CUDA graph
        can capture it)."""
        if self.mean is not None:
            mean, std = self._device_stats(x)
            x = (x - mean) / std
        x = x.to(model_dtype(self.model) or x.dtype)
        with autocast(x.device.type, self.amp, cache=False):
            out = self.model(x)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0] or out.shape[1] < 2:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"model must return logits of shape (N, num_classes) = ({x.shape[0]}, K >= 2), got {got}")
        if not out.dtype.is_floating_point:
            raise ValueError(f"model must return floating-point logits, got dtype {out.dtype}")
        self.num_classes = out.shape[1]
        self._check_goal(self.num_classes)
        if self._first_forward:  # once per call: one read-back
            self._first_forward = False
            check_finite_logits(out)
        return out.float() if self.amp is not None and out.dtype in (torch.float16, torch.bfloat16) else out

    def _device_stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, std) on x's device in x's dtype, copied there once."""
        key = (x.device, x.dtype)
        if key not in self._stats:
            self._stats[key] = (self.mean.to(x), self.std.to(x))
        return self._stats[key]

    @staticmethod
    def loss(logits: Tensor, goal: Tensor, targeted: bool, reduction: str = "sum") -> Tensor:
        """The loss each attack step increases: cross-entropy to the labels, or minus that to the
        targets; summed over the batch by default, so that each sample's gradient does not depend on
        the batch ("none": per sample, (N,))."""
        ce = F.cross_entropy(logits, goal, reduction=reduction)
        return -ce if targeted else ce

    @staticmethod
    def succeeded(logits: Tensor, goal: Tensor, targeted: bool) -> Tensor:
        """bool (N,): prediction != label (untargeted) or prediction == target (targeted)."""
        pred = logits.argmax(dim=1)
        return pred == goal if targeted else pred != goal

    # --- the call --------------------------------------------------------------------------------

    def __call__(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """Adversarial examples (N, ...) for ``images`` (N, ...) in [0, 1] and ``labels`` (N,) int64."""
        check_images(images)
        n = images.shape[0]
        if labels is not None:
            check_labels(labels, n)
        device = model_device(self.model)  # where the model is now (it may have moved since __init__)
        generator = None if self.seed is None else torch.Generator(device).manual_seed(self.seed)
        # Gradients are needed even when called under torch.no_grad() or torch.inference_mode().
        with torch.inference_mode(False), torch.enable_grad(), eval_mode(self.model, freeze=True):
            x = _normal_tensor(images.to(device))
            if labels is not None:
                labels = _normal_tensor(labels.to(device, torch.int64))
            self._first_forward = True
            goal, targeted = resolve_target(self.target, x, labels, self._clean_logits, generator)
            self._goal_range = (tuple(int(v) for v in torch.aminmax(goal)), "target" if targeted else "labels")
            if self.num_classes is not None:
                self._check_goal(self.num_classes)
            adv = self._attack(x, goal, targeted, generator)
        return adv.to(images.device, images.dtype)

    def _check_goal(self, k: int) -> None:
        """The labels (or targets) of this call must be class indices of the model, in [0, k). Checked
        once per call: before the attack when the model's K is known from an earlier call, else at the
        first forward (before any loss reads them; no device read-back there)."""
        if self._goal_range is not None:
            (lo, hi), name = self._goal_range
            self._goal_range = None
            check_classes(lo, hi, k, name)

    def _clean_logits(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.logits(x)

    def _attack(self, x: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError
