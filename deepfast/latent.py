"""Latent-space navigation for autoencoders, VAEs and GAN generators: interpolation (linear and
spherical), 2-D sweeps around a centre latent, latent arithmetic (attribute vectors, A - B + C), and
a Gaussian mixture fitted to a model's latents to sample from (ex-post density estimation).

Models: anything with ``encode`` / ``decode`` (``deepfast.models.VAE``: encode -> (mu, logvar), the
mean mu is used; ``Autoencoder``: encode -> z), or a generator called as ``model(z)``
(``deepfast.models.Generator``) for decoding. Latents are (N, D) tensors; the functions that run a
model do so under ``torch.no_grad()`` in eval mode (BatchNorm with running statistics), and restore
the model's mode afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepfast._inference import evaluating
from deepfast._validation import check_choice, check_finite_float, check_float


def _check_latents(z: object, name: str) -> Tensor:
    check_float(z, name)
    if z.dim() != 2 or z.shape[0] == 0:
        raise ValueError(f"{name} must be latents of shape (N, D) with N >= 1, got {tuple(z.shape)}")
    return z


def _check_steps(steps: object) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")


def encode(model: nn.Module, images: Tensor) -> Tensor:
    """Latents (N, D) of images (N, C, H, W): ``model.encode(images)``, or its first element (mu)
    when it returns a tuple (VAE). Runs in eval mode under no_grad."""
    if not callable(getattr(model, "encode", None)):
        raise TypeError(f"model must have an encode method (VAE, Autoencoder), got {type(model).__name__}")
    check_float(images, "images")
    with evaluating(model):
        z = model.encode(images)
    return z[0] if isinstance(z, tuple) else z


def decode(model: nn.Module, z: Tensor) -> Tensor:
    """Images (N, C, H, W) from latents z (N, D): ``model.decode(z)`` when the model has one, else
    ``model(z)`` (a generator). Runs in eval mode under no_grad."""
    _check_latents(z, "z")
    with evaluating(model):
        return model.decode(z) if callable(getattr(model, "decode", None)) else model(z)


def interpolate(z0: Tensor, z1: Tensor, steps: int = 8, method: str = "slerp", eps: float = 1e-6) -> Tensor:
    """Points from z0 to z1: (steps, *z0.shape), the first equal to z0 and the last to z1. Vectors
    lie along the last dimension (z0, z1 of shape (D,) or (N, D), interpolated row by row).

        linear:  z(t) = (1 - t) z0 + t z1,                                t = 0, 1/(steps-1), ..., 1
        slerp:   z(t) = sin((1 - t) w) / sin(w) z0 + sin(t w) / sin(w) z1,  cos w = <z0, z1> / (|z0| |z1|)

    slerp follows the great circle (the norm stays constant when |z0| = |z1|, which keeps Gaussian
    latents at their typical radius); where sin(w) < eps (near-parallel or opposite vectors, or a
    zero vector) the row is interpolated linearly. Computed in float64, returned in z0's dtype.
    """
    check_float(z0, "z0")
    check_float(z1, "z1")
    if z0.shape != z1.shape or z0.dim() not in (1, 2):
        raise ValueError(f"z0 and z1 must have one shape, (D,) or (N, D); got {tuple(z0.shape)} and {tuple(z1.shape)}")
    _check_steps(steps)
    check_choice(method, "method", ("linear", "slerp"))
    check_finite_float(eps, "eps")
    a, b = z0.double(), z1.double()
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float64, device=z0.device).view(-1, *([1] * z0.dim()))
    out = (1 - t) * a + t * b
    if method == "slerp":
        na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
        cos = ((a * b).sum(-1, keepdim=True) / (na * nb)).nan_to_num(1.0).clamp(-1.0, 1.0)
        w = torch.arccos(cos)
        sin = torch.sin(w)
        curved = sin >= eps
        safe = torch.where(curved, sin, torch.ones_like(sin))
        spherical = (torch.sin((1 - t) * w) * a + torch.sin(t * w) * b) / safe
        out = torch.where(curved, spherical, out)
    out[0], out[-1] = a, b  # exact endpoints
    return out.to(z0.dtype)


def interpolate_images(model: nn.Module, x0: Tensor, x1: Tensor, steps: int = 8, method: str = "slerp") -> Tensor:
    """Decoded interpolation between the latents of two images x0, x1 (C, H, W):
    (steps, C, H, W), ``decode(interpolate(encode(x0), encode(x1)))``; see ``interpolate``."""
    check_float(x0, "x0")
    check_float(x1, "x1")
    if x0.shape != x1.shape or x0.dim() != 3:
        raise ValueError(
            f"x0 and x1 must be images of one shape (C, H, W), got {tuple(x0.shape)} and {tuple(x1.shape)}"
        )
    z = encode(model, torch.stack([x0, x1]))
    return decode(model, interpolate(z[0], z[1], steps, method))


def principal_directions(latents: Tensor, k: int = 2) -> tuple[Tensor, Tensor]:
    """The top-k principal directions of latents (N, D): (directions (k, D) of unit norm, stds (k,)),
    stds[i] the standard deviation of the latents along directions[i] (singular values of the centred
    latents / sqrt(N - 1)). Each direction's sign makes its largest-magnitude entry positive. float64
    SVD, returned in the latents' dtype."""
    _check_latents(latents, "latents")
    n, d = latents.shape
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(d, n - 1):
        raise ValueError(f"k must be an int in 1..min(D, N - 1) = {min(d, n - 1)}, got {k!r}")
    centred = latents.double() - latents.double().mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    directions = vh[:k]
    signs = torch.sign(directions.gather(1, directions.abs().argmax(1, keepdim=True)))
    return (directions * signs).to(latents.dtype), (s[:k] / math.sqrt(n - 1)).to(latents.dtype)


def sweep_latents(center: Tensor, directions: Tensor, steps: int = 7, span: float = 2.0) -> Tensor:
    """The grid of latents center + a_i directions[0] + b_j directions[1]: (steps, steps, D), with
    a_i, b_j = linspace(-span, span, steps) (row i moves along directions[0], column j along
    directions[1]). center (D,), directions (2, D)."""
    check_float(center, "center")
    check_float(directions, "directions")
    if center.dim() != 1:
        raise ValueError(f"center must be one latent of shape (D,), got {tuple(center.shape)}")
    if directions.shape != (2, center.shape[0]):
        raise ValueError(f"directions must have shape (2, D) = (2, {center.shape[0]}), got {tuple(directions.shape)}")
    _check_steps(steps)
    check_finite_float(span, "span")
    offsets = torch.linspace(-span, span, steps, dtype=center.dtype, device=center.device)
    return center + offsets.view(-1, 1, 1) * directions[0] + offsets.view(1, -1, 1) * directions[1]


def latent_sweep(
    model: nn.Module,
    latents: Tensor | None = None,
    center: Tensor | None = None,
    directions: Tensor | None = None,
    steps: int = 7,
    span: float = 2.0,
) -> Tensor:
    """A 2-D sweep of latent space decoded to images: (steps, steps, C, H, W), image [i, j] decoded
    from ``sweep_latents(center, directions, steps, span)[i, j]``.

    ``center`` (D,) defaults to the mean of ``latents`` (N, D). ``directions`` (2, D) default to the
    top-2 principal directions of ``latents`` scaled by their standard deviations, so that ``span``
    counts standard deviations of the data along each. One of ``latents`` or both ``center`` and
    ``directions`` must be given.
    """
    if latents is None and (center is None or directions is None):
        raise ValueError("latents must be given unless both center and directions are")
    if latents is not None:
        _check_latents(latents, "latents")
        if center is None:
            center = latents.mean(0)
        if directions is None:
            units, stds = principal_directions(latents, 2)
            directions = units * stds.unsqueeze(1)
    grid = sweep_latents(center, directions, steps, span)
    images = decode(model, grid.reshape(steps * steps, -1))
    return images.reshape(steps, steps, *images.shape[1:])


def attribute_vector(with_attribute: Tensor, without_attribute: Tensor) -> Tensor:
    """Mean latent of a group with an attribute minus the mean latent of a group without it: (D,).
    Both are latents (N_i, D); also a class direction (source class -> target class) when the
    groups are the latents of two classes."""
    _check_latents(with_attribute, "with_attribute")
    _check_latents(without_attribute, "without_attribute")
    if with_attribute.shape[1] != without_attribute.shape[1]:
        raise ValueError(
            f"with_attribute and without_attribute must have one latent size D, got {with_attribute.shape[1]}"
            f" and {without_attribute.shape[1]}"
        )
    return with_attribute.mean(0) - without_attribute.mean(0)


def mean_arithmetic(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """DCGAN-style vector arithmetic on the mean latents of three groups: mean(a) - mean(b) + mean(c),
    (D,) from latents a, b, c of shape (N_i, D) (for example z's of generated samples chosen by
    eye: "smiling woman" - "neutral woman" + "neutral man")."""
    return attribute_vector(a, b) + _check_latents(c, "c").mean(0)


def attribute_groups(scores: Tensor, fraction: float = 0.25) -> tuple[Tensor, Tensor]:
    """Boolean masks (N,) of the top and the bottom ``fraction`` of ``scores`` (N,) (for example
    stroke thickness): (high, low), each round(N * fraction) >= 1 items, disjoint."""
    check_float(scores, "scores")
    if scores.dim() != 1:
        raise ValueError(f"scores must have shape (N,), got {tuple(scores.shape)}")
    check_finite_float(fraction, "fraction")
    n = max(1, round(scores.shape[0] * fraction))
    if not 0.0 < fraction <= 0.5 or 2 * n > scores.shape[0]:
        raise ValueError(
            f"fraction must be in (0, 0.5] with 2 * round(N * fraction) <= N = {scores.shape[0]}, got {fraction}"
        )
    order = scores.argsort()
    high = torch.zeros_like(scores, dtype=torch.bool)
    low = torch.zeros_like(high)
    high[order[-n:]] = True
    low[order[:n]] = True
    return high, low


def add_attribute(model: nn.Module, images: Tensor, vector: Tensor, scales: Sequence[float]) -> Tensor:
    """``decode(encode(images) + s * vector)`` for each s in ``scales``: (len(scales), N, C, H, W)
    from images (N, C, H, W) and an attribute vector (D,) (the "add glasses" recipe; s = 0 is the
    plain reconstruction)."""
    z = encode(model, images)
    check_float(vector, "vector")
    if vector.shape != z.shape[1:]:
        raise ValueError(f"vector must have the latent shape (D,) = {tuple(z.shape[1:])}, got {tuple(vector.shape)}")
    if len(scales) == 0:
        raise ValueError("scales must hold at least one value")
    for s in scales:
        check_finite_float(s, "scales")
    shifted = torch.cat([z + s * vector for s in scales])
    out = decode(model, shifted)
    return out.reshape(len(scales), z.shape[0], *out.shape[1:])


@dataclass
class GaussianMixture:
    """A mixture of K full-covariance Gaussians over latents of size D, float64:
    p(z) = sum_k weights[k] N(z; means[k], covariances[k]); weights (K,), means (K, D),
    covariances (K, D, D) symmetric positive definite. ``fit_gaussian_mixture`` makes one."""

    weights: Tensor
    means: Tensor
    covariances: Tensor

    def sample(self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """n latents (n, D) of ``dtype``: component k ~ Categorical(weights), then
        z = means[k] + L_k eps, L_k the Cholesky factor of covariances[k], eps ~ N(0, I); drawn from
        ``generator`` (torch's global generator by default), on the mixture's device."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], 1, generator=generator, dtype=torch.float64, device=self.means.device)
        scale = torch.linalg.cholesky(self.covariances)
        return (self.means[k] + (scale[k] @ eps).squeeze(-1)).to(dtype)

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) (N,) float64 of latents z (N, D)."""
        _check_latents(z, "z")
        if z.shape[1] != self.means.shape[1]:
            raise ValueError(f"z must be latents of size D = {self.means.shape[1]}, got shape {tuple(z.shape)}")
        components = torch.distributions.MultivariateNormal(self.means, covariance_matrix=self.covariances)
        return torch.logsumexp(components.log_prob(z.double()[:, None]) + self.weights.log(), dim=1)


def fit_gaussian_mixture(latents: Tensor, components: int = 10, seed: int = 0, reg: float = 1e-6) -> GaussianMixture:
    """The maximum-likelihood mixture of ``components`` full-covariance Gaussians for latents (N, D)
    (EM from a k-means start, scikit-learn's GaussianMixture; ``reg`` added to each covariance's
    diagonal; ``seed`` fixes the start).

    Ex-post density estimation (Ghosh et al. 2020): a VAE's aggregate posterior, the distribution of
    its encodings of the training data, does not fill N(0, I); decoding samples of a density fitted
    to the training latents (``encode(vae, train_images)``) gives images like its reconstructions,
    where samples of N(0, I) also land between the data's clusters."""
    from sklearn.mixture import GaussianMixture as EM

    _check_latents(latents, "latents")
    n = latents.shape[0]
    if isinstance(components, bool) or not isinstance(components, int) or not 1 <= components <= n:
        raise ValueError(f"components must be an int in 1..N = {n}, got {components!r}")
    check_finite_float(reg, "reg")
    if reg < 0:
        raise ValueError(f"reg must be >= 0, got {reg}")
    if not torch.isfinite(latents).all():
        raise ValueError("latents must be finite")
    em = EM(components, covariance_type="full", reg_covar=reg, random_state=seed).fit(
        latents.detach().double().cpu().numpy()
    )
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float64, device=latents.device)  # noqa: E731
    return GaussianMixture(as_tensor(em.weights_), as_tensor(em.means_), as_tensor(em.covariances_))
