"""deepfast.metrics: classifier checks, Frechet distance on classifier features, PSNR and SSIM."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from deepfast import metrics
from deepfast.models import LeNet


def _logit_classifier(k):
    """Images (N, 1, 1, K) whose pixels are the logits: Flatten, then an identity Linear."""
    linear = nn.Linear(k, k, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(k))
    return nn.Sequential(nn.Flatten(), linear)


def _images_from_logits(logits):
    return logits.view(logits.shape[0], 1, 1, -1)


# --- classifier checks ------------------------------------------------------------------------


def test_confidence_coverage_and_histogram_on_a_fake_classifier():
    k = 4
    p_high = math.log(0.95 / 0.05 * (k - 1))  # logit gap giving top probability 0.95
    logits = torch.zeros(6, k)
    for row, (cls, gap) in enumerate([(0, p_high), (0, p_high), (2, p_high), (2, 0.5), (2, 0.0), (0, p_high)]):
        logits[row, cls] = gap
    images = _images_from_logits(logits)
    check = metrics.check_with_classifier(_logit_classifier(k), images, threshold=0.9, batch_size=4)
    assert check.confident == pytest.approx(4 / 6)
    # row 4 has equal logits: argmax takes class 0
    assert check.histogram.tolist() == [4, 0, 2, 0] and check.histogram.dtype == torch.int64
    assert check.coverage == pytest.approx(2 / 4)
    probs = metrics.predict_proba(_logit_classifier(k), images)
    torch.testing.assert_close(probs, logits.softmax(1))
    assert metrics.confident_fraction(probs, threshold=0.0) == 1.0


def test_classifier_checks_bad_input():
    clf = _logit_classifier(3)
    with pytest.raises(ValueError, match="images"):
        metrics.predict_proba(clf, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="batch_size"):
        metrics.predict_proba(clf, torch.zeros(4, 1, 1, 3), batch_size=0)
    with pytest.raises(ValueError, match="probs"):
        metrics.confident_fraction(torch.zeros(3))
    with pytest.raises(ValueError, match="classifier must return logits"):
        metrics.predict_proba(nn.Flatten(0), torch.zeros(4, 1, 1, 3))


# --- features -----------------------------------------------------------------------------------


def test_features_default_is_the_input_of_the_last_linear_and_hooks_are_removed():
    torch.manual_seed(0)
    clf = LeNet().train()
    x = torch.rand(5, 1, 32, 32)
    f = metrics.features(clf, x, batch_size=2)
    assert f.shape == (5, 84) and f.dtype == torch.float64 and clf.training
    clf.eval()
    with torch.no_grad():
        expected = clf.classifier[:4](clf.features(x))
    torch.testing.assert_close(f, expected.double())
    named = metrics.features(clf, x, layer="features")
    torch.testing.assert_close(named, clf.features(x).detach().double())
    assert all(not m._forward_hooks for m in clf.modules())
    with pytest.raises(ValueError, match="layer 'nope'"):
        metrics.features(clf, x, layer="nope")
    with pytest.raises(ValueError, match="name a layer"):
        metrics.features(nn.Flatten(), x)


# --- Frechet distance ---------------------------------------------------------------------------


def _with_moments(mean, cov, n, seed):
    """n samples whose sample mean and unbiased covariance are exactly mean and cov (float64)."""
    z = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    whitening = torch.linalg.cholesky(torch.cov(z.T))
    z = torch.linalg.solve_triangular(whitening, z.T, upper=False).T  # unit sample covariance
    return z @ torch.linalg.cholesky(cov).T + mean


def test_frechet_identical_sets_is_zero():
    f = torch.randn(300, 12, generator=torch.Generator().manual_seed(0))
    assert metrics.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-9)
    few = f[:5]  # fewer samples than features: singular covariance, still stable
    assert metrics.frechet_distance(few, few.clone()) == pytest.approx(0.0, abs=1e-9)


def test_frechet_matches_closed_forms():
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sqrt(s_a) - sqrt(s_b))^2
    s_a, s_b = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64), torch.tensor([9.0, 1.0, 0.25], dtype=torch.float64)
    mu_a, mu_b = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    a = _with_moments(mu_a, torch.diag(s_a), 50, 1)
    b = _with_moments(mu_b, torch.diag(s_b), 70, 2)
    expected = (mu_a - mu_b).square().sum() + (s_a.sqrt() - s_b.sqrt()).square().sum()
    assert metrics.frechet_distance(a, b) == pytest.approx(expected.item(), rel=1e-9)
    # non-commuting 2x2 covariances: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for M = S_a S_b
    cov_a = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    cov_b = torch.tensor([[0.5, -0.3], [-0.3, 3.0]], dtype=torch.float64)
    m = cov_a @ cov_b
    cross = math.sqrt(m.trace() + 2 * math.sqrt(torch.linalg.det(m)))
    mu = torch.tensor([0.5, -1.0], dtype=torch.float64)
    a = _with_moments(torch.zeros(2, dtype=torch.float64), cov_a, 40, 3)
    b = _with_moments(mu, cov_b, 40, 4)
    expected = mu.square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    assert metrics.frechet_distance(a.float(), b.float()) == pytest.approx(expected.item(), rel=1e-5)


def test_classifier_frechet_distance_orders_shifted_sets():
    torch.manual_seed(0)
    clf = LeNet()
    real = torch.rand(40, 1, 32, 32)
    near = (real + 0.02 * torch.randn_like(real)).clamp(0, 1)
    far = torch.rand(40, 1, 32, 32) * 0.3
    d_same = metrics.classifier_frechet_distance(clf, real, real)
    d_near = metrics.classifier_frechet_distance(clf, near, real)
    d_far = metrics.classifier_frechet_distance(clf, far, real, layer="classifier.1")
    assert d_same == pytest.approx(0.0, abs=1e-8) and 0 < d_near
    assert metrics.classifier_frechet_distance(clf, far, real) > d_near and d_far > 0


def test_frechet_bad_input():
    with pytest.raises(ValueError, match="features_b"):
        metrics.frechet_distance(torch.randn(5, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="one width"):
        metrics.frechet_distance(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match="generated"):
        metrics.classifier_frechet_distance(LeNet(), torch.rand(1, 32, 32), torch.rand(2, 1, 32, 32))


# --- PSNR and SSIM ------------------------------------------------------------------------------


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_psnr_ssim_match_skimage(value_range):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    lo, hi = value_range
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 24, 19, generator=g, dtype=torch.float64) * (hi - lo) + lo
    y = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(lo, hi)
    s = metrics.ssim(x, y, value_range=value_range)
    p = metrics.psnr(x, y, value_range=value_range)
    for i in range(3):
        a, b = x[i].numpy(), y[i].numpy()
        ref = structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=hi - lo, channel_axis=0
        )
        assert s[i].item() == pytest.approx(ref, rel=1e-10)
        assert p[i].item() == pytest.approx(peak_signal_noise_ratio(a, b, data_range=hi - lo), rel=1e-10)


def test_psnr_ssim_identities_and_order():
    x = torch.rand(2, 1, 16, 16)
    assert torch.isinf(metrics.psnr(x, x)).all()
    torch.testing.assert_close(metrics.ssim(x, x), torch.ones(2, dtype=torch.float64))
    noisy = [x + s * torch.randn_like(x) for s in (0.05, 0.2)]
    assert (metrics.ssim(x, noisy[0]) > metrics.ssim(x, noisy[1])).all()
    assert (metrics.psnr(x, noisy[0]) > metrics.psnr(x, noisy[1])).all()
    # psnr on a constant error e: 10 log10(1 / e^2)
    torch.testing.assert_close(metrics.psnr(x, x + 0.1), torch.full((2,), 20.0, dtype=torch.float64))
    assert np.isfinite(metrics.ssim(x, 1 - x).numpy()).all()


def test_psnr_ssim_bad_input():
    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match="x and y"):
        metrics.psnr(x, x[:1])
    with pytest.raises(ValueError, match="value_range"):
        metrics.ssim(x, x, value_range=(1, 1))
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(torch.rand(1, 1, 8, 30), torch.rand(1, 1, 8, 30))
    with pytest.raises(ValueError, match="sigma"):
        metrics.ssim(x, x, sigma=0.0)
    with pytest.raises(TypeError, match="y"):
        metrics.psnr(x, x.long())
