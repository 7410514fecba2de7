"""Image-quality metrics: checking generated images with a classifier (confidence, class coverage,
Frechet distance on the classifier's features), and PSNR / SSIM between image batches.

PSNR and SSIM are written in torch rather than taken from skimage.metrics: they run on whole
(N, C, H, W) batches on any device without a copy to numpy, and tests/test_metrics.py checks them
against skimage's per-image results.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deepfast._inference import evaluating
from deepfast._validation import ValueRange, check_finite_float, check_float, check_value_range


def _check_images(images: object, name: str) -> Tensor:
    check_float(images, name)
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"{name} must be a batch (N, C, H, W) with N >= 1, got shape {tuple(images.shape)}")
    return images


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def predict_proba(classifier: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Softmax of the classifier's logits: (N, K) float32, from images (N, C, H, W) in the range the
    classifier was trained on; batches of ``batch_size``, eval mode, no_grad."""
    _check_images(images, "images")
    _check_batch_size(batch_size)
    with evaluating(classifier):
        logits = torch.cat([classifier(chunk) for chunk in images.split(batch_size)])
    if logits.dim() != 2:
        raise ValueError(f"classifier must return logits (N, K), got shape {tuple(logits.shape)}")
    return logits.float().softmax(1)


@dataclass
class ClassifierCheck:
    """What a classifier says about a set of images. ``confident``: share of images whose top class
    has probability >= threshold; ``coverage``: classes predicted at least once / K; ``histogram``:
    (K,) int64 count of images per predicted class (argmax)."""

    confident: float
    coverage: float
    histogram: Tensor


def confident_fraction(probs: Tensor, threshold: float = 0.9) -> float:
    """Share of rows of probs (N, K) whose largest probability is >= threshold."""
    check_float(probs, "probs")
    check_finite_float(threshold, "threshold")
    if probs.dim() != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be (N, K) with N >= 1, got shape {tuple(probs.shape)}")
    return (probs.max(1).values >= threshold).double().mean().item()


def class_histogram(probs: Tensor) -> Tensor:
    """Count of rows of probs (N, K) per predicted class (argmax): (K,) int64."""
    check_float(probs, "probs")
    if probs.dim() != 2:
        raise ValueError(f"probs must be (N, K), got shape {tuple(probs.shape)}")
    return torch.bincount(probs.argmax(1), minlength=probs.shape[1]).cpu()


def check_with_classifier(
    classifier: nn.Module, images: Tensor, threshold: float = 0.9, batch_size: int = 256
) -> ClassifierCheck:
    """Confidence share, class coverage and class histogram of ``images`` (N, C, H, W) under
    ``classifier`` (see ``ClassifierCheck``). A good class-covering generator scores near 1 on both."""
    probs = predict_proba(classifier, images, batch_size)
    hist = class_histogram(probs)
    return ClassifierCheck(confident_fraction(probs, threshold), (hist > 0).double().mean().item(), hist)


def features(classifier: nn.Module, images: Tensor, layer: str | None = None, batch_size: int = 256) -> Tensor:
    """Features of images (N, C, H, W) inside ``classifier``, captured by a forward hook: (N, F)
    float64. ``layer`` names a submodule (``classifier.get_submodule(layer)``, e.g.
    "classifier.3"), whose output is taken, flattened; None takes the input of the classifier's
    last nn.Linear (the penultimate features). Eval mode, no_grad."""
    _check_images(images, "images")
    _check_batch_size(batch_size)
    if layer is None:
        linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("layer=None takes the input of the last nn.Linear, and classifier has none: name a layer")
        module, take_input = linears[-1], True
    else:
        try:
            module = classifier.get_submodule(layer)
        except AttributeError as err:
            raise ValueError(f"layer {layer!r} is not a submodule of the classifier: {err}") from None
        take_input = False
    captured: list[Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        captured.append((inputs[0] if take_input else output).flatten(1).double())

    handle = module.register_forward_hook(hook)
    try:
        with evaluating(classifier):
            for chunk in images.split(batch_size):
                classifier(chunk)
    finally:
        handle.remove()
    return torch.cat(captured)


def _sqrt_psd(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition (negative
    rounding-error eigenvalues clamped to 0)."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N_a, F) and (N_b, F):

        ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)

    with means and (unbiased) covariances in float64. The last trace equals tr((S_a S_b)^1/2) of the
    usual formula; written with symmetric matrices it takes two eigendecompositions (eigh) and no
    non-symmetric sqrtm, so it is stable for singular covariances. Each set needs N >= 2."""
    for t, name in ((features_a, "features_a"), (features_b, "features_b")):
        check_float(t, name)
        if t.dim() != 2 or t.shape[0] < 2:
            raise ValueError(f"{name} must be (N, F) with N >= 2, got shape {tuple(t.shape)}")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(
            f"features_a and features_b must have one width F, got {features_a.shape[1]} and {features_b.shape[1]}"
        )
    a, b = features_a.double(), features_b.double().to(features_a.device)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(value.item(), 0.0)


def classifier_frechet_distance(
    classifier: nn.Module, generated: Tensor, real: Tensor, layer: str | None = None, batch_size: int = 256
) -> float:
    """Frechet distance between generated and real images (N_i, C, H, W) on ``classifier``'s features
    at ``layer`` (see ``features``): the FID recipe with a classifier of your own data instead of
    downloaded Inception weights, so values compare only between runs with the same classifier."""
    _check_images(generated, "generated")
    _check_images(real, "real")
    return frechet_distance(
        features(classifier, generated, layer, batch_size), features(classifier, real, layer, batch_size)
    )


def _check_pair(x: object, y: object) -> None:
    _check_images(x, "x")
    check_float(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have one shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def psnr(x: Tensor, y: Tensor, value_range: ValueRange = (0.0, 1.0)) -> Tensor:
    """Peak signal-to-noise ratio of each image pair: (N,) float64 in dB, from x, y (N, C, H, W),

        psnr = 10 log10(R^2 / mean((x - y)^2)),    R = hi - lo of value_range

    (inf for identical images)."""
    _check_pair(x, y)
    lo, hi = check_value_range(value_range)
    mse = (x.detach().double() - y.detach().double()).square().flatten(1).mean(1)
    return 10 * torch.log10((hi - lo) ** 2 / mse)


def _gaussian_window(sigma: float, radius: int, device: torch.device) -> Tensor:
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    weights = torch.exp(-offsets.square() / (2 * sigma * sigma))
    return weights / weights.sum()


def ssim(x: Tensor, y: Tensor, value_range: ValueRange = (0.0, 1.0), sigma: float = 1.5) -> Tensor:
    """Structural similarity (Wang et al. 2004) of each image pair: (N,) float64, from x, y
    (N, C, H, W): the mean over channels and pixels of

        ((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))

    with local means, variances and covariance under a Gaussian window of std ``sigma`` truncated
    at radius int(3.5 sigma + 0.5) (11x11 for 1.5), C1 = (0.01 R)^2, C2 = (0.03 R)^2, R = hi - lo of
    value_range; only positions where the whole window fits count. Equals
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=sigma,
    use_sample_covariance=False, data_range=R, channel_axis=0)`` per image.
    """
    _check_pair(x, y)
    lo, hi = check_value_range(value_range)
    check_finite_float(sigma, "sigma")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = int(3.5 * sigma + 0.5)
    if min(x.shape[-2:]) < 2 * radius + 1:
        side = 2 * radius + 1
        raise ValueError(f"x must be at least {side}x{side} for sigma={sigma}, got {tuple(x.shape[-2:])}")
    n, c, h, w = x.shape
    g = _gaussian_window(sigma, radius, x.device)

    def blur(t: Tensor) -> Tensor:  # separable valid convolution of (N*C, 1, H, W)
        t = F.conv2d(t, g.view(1, 1, -1, 1))
        return F.conv2d(t, g.view(1, 1, 1, -1))

    a = x.detach().double().reshape(n * c, 1, h, w)
    b = y.detach().double().reshape(n * c, 1, h, w)
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.square()
    var_b = blur(b * b) - mu_b.square()
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * (hi - lo)) ** 2, (0.03 * (hi - lo)) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2))
    return s.reshape(n, -1).mean(1)


__all__ = [
    "ClassifierCheck",
    "check_with_classifier",
    "class_histogram",
    "classifier_frechet_distance",
    "confident_fraction",
    "features",
    "frechet_distance",
    "predict_proba",
    "psnr",
    "ssim",
]
