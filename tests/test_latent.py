"""deepfast.latent: interpolation, sweeps, attribute vectors and latent arithmetic; deepfast.attributes."""

import math

import pytest
import torch
from torch import nn

from deepfast import attributes, latent
from deepfast.models import VAE, Autoencoder, Generator

skeletonize = pytest.importorskip("skimage.morphology").skeletonize  # (scikit-image: optional)


class LinearAE(nn.Module):
    """encode: x (N, 1, 4, 4) -> W x (N, D); decode: z -> (N, 1, 4, 4); BatchNorm to see the mode."""

    def __init__(self, d: int = 3) -> None:
        super().__init__()
        self.enc = nn.Linear(16, d, bias=False)
        self.dec = nn.Linear(d, 16, bias=False)
        self.bn = nn.BatchNorm1d(16, affine=False)

    def encode(self, x):
        return self.enc(x.flatten(1))

    def decode(self, z):
        return self.bn(self.dec(z)).view(-1, 1, 4, 4)


def _angle(a, b):
    return torch.arccos((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).double()


# --- interpolate ------------------------------------------------------------------------------


def test_slerp_endpoints_norm_and_even_angles():
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(5, 16, generator=g, dtype=torch.float64)
    z1 = torch.randn(5, 16, generator=g, dtype=torch.float64)
    z1 = z1 / z1.norm(dim=1, keepdim=True) * z0.norm(dim=1, keepdim=True)
    path = latent.interpolate(z0, z1, steps=9, method="slerp")
    assert path.shape == (9, 5, 16) and path.dtype == torch.float64
    assert torch.equal(path[0], z0) and torch.equal(path[-1], z1)
    torch.testing.assert_close(path.norm(dim=-1), z0.norm(dim=-1).expand(9, 5))
    steps = _angle(path[1:], path[:-1])  # equal angles between consecutive points, summing to the whole
    torch.testing.assert_close(steps, (_angle(z0, z1) / 8).expand(8, 5))
    assert not torch.allclose(path[4], (z0 + z1) / 2)  # a curve, not the chord


def test_slerp_midpoint_closed_form_and_dtype():
    z0 = torch.tensor([1.0, 0.0])
    z1 = torch.tensor([0.0, 2.0])
    mid = latent.interpolate(z0, z1, steps=3)[1]
    # w = pi/2: sin(w/2)/sin(w) (z0 + z1)
    torch.testing.assert_close(mid, math.sin(math.pi / 4) * (z0 + z1))
    assert mid.dtype == torch.float32


@pytest.mark.parametrize("z1_of", [lambda z: 2 * z, lambda z: z + 1e-9, lambda z: -z, lambda z: torch.zeros_like(z)])
def test_slerp_parallel_opposite_or_zero_falls_back_to_linear(z1_of):
    z0 = torch.tensor([[0.3, -1.2, 0.5]], dtype=torch.float64)
    z1 = z1_of(z0)
    path = latent.interpolate(z0, z1, steps=5, method="slerp")
    assert torch.isfinite(path).all()
    torch.testing.assert_close(path, latent.interpolate(z0, z1, steps=5, method="linear"))


def test_linear_formula():
    z0, z1 = torch.randn(7), torch.randn(7)
    path = latent.interpolate(z0, z1, steps=4, method="linear")
    for i, t in enumerate([0, 1 / 3, 2 / 3, 1]):
        torch.testing.assert_close(path[i], (1 - t) * z0 + t * z1)


def test_interpolate_bad_arguments():
    z = torch.randn(2, 4)
    with pytest.raises(ValueError, match="steps"):
        latent.interpolate(z, z, steps=1)
    with pytest.raises(ValueError, match="method"):
        latent.interpolate(z, z, method="cubic")
    with pytest.raises(ValueError, match="z0 and z1"):
        latent.interpolate(z, z[:1])
    with pytest.raises(TypeError, match="z1"):
        latent.interpolate(z, z.long())


# --- encode / decode with the library's models --------------------------------------------------


def test_vae_encode_is_mu_decode_and_mode_restored():
    torch.manual_seed(0)
    model = VAE(channels=1, image_size=32, latent_dim=6, width=8).train()
    x = torch.rand(3, 1, 32, 32)
    z = latent.encode(model, x)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    torch.testing.assert_close(z, model.encode(x)[0])
    model.train()
    images = latent.interpolate_images(model, x[0], x[1], steps=4)
    assert images.shape == (4, 1, 32, 32) and not images.requires_grad
    torch.testing.assert_close(images[0], model.eval().decode(z[:1])[0])


def test_autoencoder_interpolation_and_sweep_shapes():
    torch.manual_seed(0)
    model = Autoencoder(channels=1, image_size=32, latent_dim=5, width=8)
    x = torch.rand(6, 1, 32, 32)
    z = latent.encode(model, x)
    assert z.shape == (6, 5)
    frames = latent.interpolate_images(model, x[0], x[1], steps=3, method="linear")
    torch.testing.assert_close(frames[1], latent.decode(model, ((z[0] + z[1]) / 2)[None])[0])
    assert latent.latent_sweep(model, latents=z, steps=2).shape == (2, 2, 1, 32, 32)


def test_generator_decode_and_mean_arithmetic():
    torch.manual_seed(0)
    gen = Generator(nz=8, ngf=8, nc=1, image_size=32)
    a, b, c = torch.randn(4, 8), torch.randn(3, 8), torch.randn(5, 8)
    z = latent.mean_arithmetic(a, b, c)
    torch.testing.assert_close(z, a.mean(0) - b.mean(0) + c.mean(0))
    out = latent.decode(gen, z.unsqueeze(0))
    assert out.shape == (1, 1, 32, 32) and gen.training
    with pytest.raises(TypeError, match="encode"):
        latent.encode(gen, out)


# --- principal directions and sweeps -----------------------------------------------------------


def test_principal_directions_recover_known_axes():
    g = torch.Generator().manual_seed(1)
    u = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64) / math.sqrt(2)
    v = torch.tensor([0.0, 0.0, -1.0, 0.0], dtype=torch.float64)
    coeffs = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    noise = 0.01 * torch.randn(4000, 4, generator=g, dtype=torch.float64)
    z = 5.0 + 3.0 * coeffs[:, :1] * u + 1.0 * coeffs[:, 1:] * v + noise
    dirs, stds = latent.principal_directions(z, k=2)
    assert dirs.shape == (2, 4) and stds.shape == (2,)
    torch.testing.assert_close(dirs[0], u, atol=0.01, rtol=0)
    torch.testing.assert_close(dirs[1], -v, atol=0.01, rtol=0)  # sign: largest entry positive
    torch.testing.assert_close(stds, torch.tensor([3.0, 1.0], dtype=torch.float64), atol=0.1, rtol=0)
    torch.testing.assert_close(stds, ((z - z.mean(0)) @ dirs.T).std(0), rtol=1e-10, atol=0)  # unbiased std
    with pytest.raises(ValueError, match="k must"):
        latent.principal_directions(z, k=5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_principal_directions_sign_convention_and_orthonormal(seed):
    z = torch.randn(30, 6, generator=torch.Generator().manual_seed(seed))
    dirs, _ = latent.principal_directions(z, k=4)
    assert (dirs.gather(1, dirs.abs().argmax(1, keepdim=True)) > 0).all()
    torch.testing.assert_close(dirs @ dirs.T, torch.eye(4), atol=1e-5, rtol=0)


def test_sweep_latents_grid_values():
    center = torch.tensor([1.0, 2.0, 3.0])
    dirs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    grid = latent.sweep_latents(center, dirs, steps=5, span=1.0)
    assert grid.shape == (5, 5, 3)
    torch.testing.assert_close(grid[2, 2], center)
    torch.testing.assert_close(grid[0, 4], center - dirs[0] + dirs[1])
    torch.testing.assert_close(grid[3, 1], center + 0.5 * dirs[0] - 0.5 * dirs[1])
    with pytest.raises(ValueError, match="directions"):
        latent.sweep_latents(center, dirs[:1])
    with pytest.raises(ValueError, match="center"):
        latent.sweep_latents(center.view(1, 3), dirs)


def test_latent_sweep_decodes_the_grid_from_pca():
    torch.manual_seed(0)
    model = LinearAE(d=3).train()
    model.bn.running_mean.fill_(0.25)  # eval must use these
    z = torch.randn(50, 3)
    images = latent.latent_sweep(model, latents=z, steps=3, span=2.0)
    assert images.shape == (3, 3, 1, 4, 4) and model.training
    dirs, stds = latent.principal_directions(z)
    expected = latent.sweep_latents(z.mean(0), dirs * stds.unsqueeze(1), 3, 2.0)
    torch.testing.assert_close(images, latent.decode(model, expected.view(9, 3)).view(3, 3, 1, 4, 4))
    assert torch.isclose(images[1, 1], (model.dec(z.mean(0)) - 0.25).view(1, 4, 4) / math.sqrt(1 + 1e-5)).all()
    with pytest.raises(ValueError, match="latents must be given"):
        latent.latent_sweep(model, center=z[0])


# --- attribute vectors ------------------------------------------------------------------------


def test_attribute_vector_recovers_a_known_direction_and_moves_the_attribute():
    g = torch.Generator().manual_seed(2)
    direction = torch.nn.functional.normalize(torch.randn(8, generator=g), dim=0)
    attribute = torch.rand(600, generator=g)  # e.g. a thickness score
    z = torch.randn(600, 8, generator=g) + 4.0 * attribute[:, None] * direction
    high, low = latent.attribute_groups(attribute, fraction=0.25)
    assert high.sum() == low.sum() == 150 and not (high & low).any()
    assert attribute[high].min() > attribute[low].max()
    vec = latent.attribute_vector(z[high], z[low])
    assert torch.nn.functional.cosine_similarity(vec, direction, dim=0) > 0.95
    # adding the vector moves latents along the direction by the scale times its length
    model = LinearAE(d=8)
    with torch.no_grad():
        model.enc.weight.copy_(torch.eye(8, 16))
        model.dec.weight.copy_(torch.eye(16, 8))
    x = torch.zeros(2, 1, 4, 4)
    x.view(2, 16)[:, :8] = z[:2]
    out = latent.add_attribute(model, x, vec, scales=[0.0, 1.0, 2.0])
    assert out.shape == (3, 2, 1, 4, 4)
    along = [(o.view(2, 16)[:, :8] * direction).sum(1) for o in out]
    torch.testing.assert_close(along[2] - along[1], along[1] - along[0])
    shift = (vec * direction).sum() / math.sqrt(1 + 1e-5)  # eval BatchNorm with unit running variance
    torch.testing.assert_close(along[1] - along[0], shift.expand(2))


def test_attribute_bad_arguments():
    z = torch.randn(5, 4)
    with pytest.raises(ValueError, match="without_attribute"):
        latent.attribute_vector(z, torch.randn(0, 4))
    with pytest.raises(ValueError, match="latent size"):
        latent.attribute_vector(z, torch.randn(3, 3))
    with pytest.raises(ValueError, match="fraction"):
        latent.attribute_groups(torch.rand(10), fraction=0.6)
    with pytest.raises(ValueError, match="vector"):
        latent.add_attribute(LinearAE(d=4), torch.rand(2, 1, 4, 4), torch.zeros(3), [1.0])
    with pytest.raises(ValueError, match="scales"):
        latent.add_attribute(LinearAE(d=4), torch.rand(2, 1, 4, 4), torch.zeros(4), [])


# --- Gaussian mixture (ex-post density estimation) ---------------------------------------------


def _two_blobs(n=1200, seed=0):
    """Latents from a known mixture: weights 0.7 / 0.3, means (-4, 0, 1) / (5, 2, -1), correlated covariances."""
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[-4.0, 0.0, 1.0], [5.0, 2.0, -1.0]], dtype=torch.float64)
    scales = torch.tensor(
        [[[1.0, 0, 0], [0.8, 0.6, 0], [0, 0, 0.5]], [[0.5, 0, 0], [0, 1.5, 0], [-0.4, 0, 0.3]]], dtype=torch.float64
    )
    k = (torch.rand(n, generator=g) < 0.3).long()
    eps = torch.randn(n, 3, 1, generator=g, dtype=torch.float64)
    return means[k] + (scales[k] @ eps).squeeze(-1), means, scales @ scales.transpose(1, 2)


def test_gaussian_mixture_recovers_a_known_mixture():
    z, means, covs = _two_blobs()
    mix = latent.fit_gaussian_mixture(z.float(), components=2)
    order = mix.means[:, 0].argsort()
    assert torch.allclose(mix.weights[order], torch.tensor([0.7, 0.3], dtype=torch.float64), atol=0.04)
    assert torch.allclose(mix.means[order], means, atol=0.15)
    assert torch.allclose(mix.covariances[order], covs, atol=0.2)
    assert mix.weights.dtype == mix.means.dtype == mix.covariances.dtype == torch.float64


def test_gaussian_mixture_samples_follow_the_mixture_and_are_reproducible():
    _, means, covs = _two_blobs()
    mix = latent.GaussianMixture(torch.tensor([0.25, 0.75], dtype=torch.float64), means, covs)
    z = mix.sample(40000, torch.Generator().manual_seed(1), dtype=torch.float64)
    assert z.shape == (40000, 3) and z.dtype == torch.float64
    first = z[:, 0] < 0  # the components are 9 apart along the first axis
    assert abs(first.double().mean().item() - 0.25) < 0.01
    for k, part in enumerate((z[first], z[~first])):
        assert torch.allclose(part.mean(0), means[k], atol=0.05)
        assert torch.allclose(torch.cov(part.T), covs[k], atol=0.06)
    again = mix.sample(5, torch.Generator().manual_seed(1))
    assert again.dtype == torch.float32
    assert torch.equal(again, mix.sample(5, torch.Generator().manual_seed(1)))


def test_gaussian_mixture_log_prob_is_the_mixture_density():
    _, means, covs = _two_blobs()
    w = torch.tensor([0.6, 0.4], dtype=torch.float64)
    mix = latent.GaussianMixture(w, means, covs)
    z = torch.randn(7, 3, dtype=torch.float64) * 3
    expected = []
    for x in z:  # the density written out: sum_k w_k (2 pi)^(-D/2) |S_k|^(-1/2) exp(-(x - m_k)' S_k^-1 (x - m_k) / 2)
        p = sum(
            w[k]
            * (2 * math.pi) ** -1.5
            * torch.linalg.det(covs[k]) ** -0.5
            * torch.exp(-0.5 * (x - means[k]) @ torch.linalg.solve(covs[k], x - means[k]))
            for k in range(2)
        )
        expected.append(torch.log(p))
    assert torch.allclose(mix.log_prob(z.float()), torch.stack(expected), rtol=1e-5, atol=1e-6)


def test_gaussian_mixture_bad_arguments():
    z = torch.randn(20, 3)
    with pytest.raises(ValueError, match="components"):
        latent.fit_gaussian_mixture(z, components=21)
    with pytest.raises(ValueError, match="components"):
        latent.fit_gaussian_mixture(z, components=0)
    with pytest.raises(ValueError, match="latents"):
        latent.fit_gaussian_mixture(z[0])
    with pytest.raises(ValueError, match="latents must be finite"):
        latent.fit_gaussian_mixture(torch.cat([z, torch.full((1, 3), float("nan"))]))
    with pytest.raises(ValueError, match="reg"):
        latent.fit_gaussian_mixture(z, reg=-1.0)
    mix = latent.fit_gaussian_mixture(z, components=2)
    with pytest.raises(ValueError, match="n must be"):
        mix.sample(0)
    with pytest.raises(ValueError, match="size D = 3"):
        mix.log_prob(torch.randn(4, 2))


# --- digit attributes -------------------------------------------------------------------------


def _strokes():
    im = torch.zeros(4, 1, 32, 32)
    im[0, 0, 4:28, 14:16] = 1.0  # upright, 2 px wide
    im[1, 0, 4:28, 13:17] = 1.0  # upright, 4 px wide
    for r in range(4, 28):  # 2 px wide, one column to the right every 3 rows upwards
        c = 20 - (r - 4) // 3
        im[2, 0, r, c : c + 2] = 1.0
        c = 10 + (r - 4) // 3  # mirrored: leaning left
        im[3, 0, r, c : c + 2] = 1.0
    return im


def test_stroke_thickness_orders_widths():
    t = attributes.stroke_thickness(_strokes())
    assert t.dtype == torch.float64 and t.shape == (4,)
    assert 1.8 < t[0] < 2.5 and 3.6 < t[1] < 4.6  # mass / skeleton, skeleton a bit shorter than the stroke
    expected = [im.sum() / float(skeletonize(im[0].numpy() > 0.5).sum()) for im in _strokes()]
    torch.testing.assert_close(t, torch.tensor(expected, dtype=torch.float64))
    assert attributes.stroke_thickness(torch.zeros(1, 1, 8, 8)).item() == 0.0
    # the value range maps to ink: the same strokes in [-1, 1]
    torch.testing.assert_close(attributes.stroke_thickness(_strokes() * 2 - 1, value_range=(-1, 1)), t)


def test_slant_sign_and_value():
    s = attributes.slant(_strokes())
    torch.testing.assert_close(s[:2], torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    assert abs(s[2] - 1 / 3) < 0.03 and abs(s[3] + 1 / 3) < 0.03
    assert attributes.slant(torch.zeros(2, 8, 8)).eq(0).all()


def test_attribute_measures_bad_input():
    with pytest.raises(ValueError, match="images"):
        attributes.slant(torch.zeros(2, 3, 8, 8))
    with pytest.raises(TypeError, match="images"):
        attributes.stroke_thickness(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="threshold"):
        attributes.stroke_thickness(torch.zeros(2, 1, 8, 8), threshold=1.5)
