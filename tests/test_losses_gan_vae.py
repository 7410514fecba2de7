"""GANLoss, VAELoss and ImagePool against their formulas written out in float64."""

import pytest
import torch

from deepfast.losses import GAN_MODES, GANLoss, ImagePool, VAELoss


def logits(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * 4).requires_grad_()


def reference_gan(mode, real, fake, r=1.0):
    """(J_D, J_G) from D = sigmoid(logit), straight from the papers' formulas; r the real images' label."""
    if mode == "lsgan":
        return ((real - r) ** 2).mean() + (fake**2).mean(), ((fake - 1) ** 2).mean()
    if mode == "hinge":
        return torch.clamp(1 - real, min=0).mean() + torch.clamp(1 + fake, min=0).mean(), -fake.mean()
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    j_d = -(r * torch.log(d_real) + (1 - r) * torch.log(1 - d_real)).mean() - torch.log(1 - d_fake).mean()
    j_g = -torch.log(d_fake).mean() if mode == "non-saturating" else torch.log(1 - d_fake).mean()
    return j_d, j_g


@pytest.mark.parametrize(
    ("mode", "real_label"), [(m, 1.0) for m in GAN_MODES] + [(m, 0.9) for m in GAN_MODES if m != "hinge"]
)  # one-sided label smoothing
@pytest.mark.parametrize("shape", [(7,), (3, 1, 5, 6)])
def test_gan_loss_matches_formulas(mode, real_label, shape):
    real, fake = logits(*shape, seed=1), logits(*shape, seed=2)
    loss = GANLoss(mode, real_label)
    got_d, got_g = loss.discriminator(real, fake), loss(fake)
    want_d, want_g = reference_gan(mode, real, fake, real_label)
    assert got_d.dtype == got_g.dtype == torch.float32 and got_d.dim() == 0
    for got, want, inputs in ((got_d, want_d, (real, fake)), (got_g, want_g, (fake,))):
        torch.testing.assert_close(got.double(), want.detach(), rtol=1e-5, atol=1e-6)
        got_grads = torch.autograd.grad(got * 0.7, inputs)
        want_grads = torch.autograd.grad(want * 0.7, inputs, retain_graph=True)
        for a, b in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_gan_loss_is_finite_for_confident_discriminators():
    huge = torch.tensor([200.0, -200.0])
    for mode in ("non-saturating", "saturating"):
        loss = GANLoss(mode)
        assert torch.isfinite(loss.discriminator(huge, -huge)) and torch.isfinite(loss(huge))


def test_non_saturating_gradient_is_strong_where_saturating_vanishes():
    # D confidently rejects the fakes (logit -10): the saturating cost gives almost no gradient.
    fake = torch.full((4,), -10.0, requires_grad=True)
    (g_sat,) = torch.autograd.grad(GANLoss("saturating")(fake), fake)
    (g_ns,) = torch.autograd.grad(GANLoss("non-saturating")(fake), fake)
    assert g_sat.abs().max() < 1e-4 < 0.2 < g_ns.abs().min()


def test_gan_loss_bad_input():
    with pytest.raises(ValueError, match="mode"):
        GANLoss("wasserstein")
    with pytest.raises(TypeError, match="fake"):
        GANLoss()(torch.ones(3, dtype=torch.int64))
    for bad in (0.0, 1.5, "0.9"):
        with pytest.raises(ValueError, match="real_label"):
            GANLoss("non-saturating", bad)
    with pytest.raises(ValueError, match="hinge"):
        GANLoss("hinge", 0.9)


@pytest.mark.parametrize("reconstruction", ["bce", "mse"])
def test_vae_loss_is_recon_plus_beta_kl(reconstruction):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5, 1, 7, 9, generator=g, dtype=torch.float64)
    recon = torch.rand(5, 1, 7, 9, generator=g, dtype=torch.float64).clamp(0.01, 0.99).requires_grad_()
    kl = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    if reconstruction == "bce":
        rec = -(x * recon.log() + (1 - x) * (1 - recon).log()).sum() / 5
    else:
        rec = ((recon - x) ** 2).sum() / 5
    loss = VAELoss(beta=0.3, reconstruction=reconstruction)
    got = loss(recon.float(), x.float(), kl.float())
    torch.testing.assert_close(got.double(), (rec + 0.3 * kl).detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss.terms["recon"].double(), rec.detach(), rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(loss(recon, x, kl) * 1.5, (recon, kl))
    want = torch.autograd.grad((rec + 0.3 * kl) * 1.5, (recon, kl))
    for a, b in zip(grads, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-7)


def test_vae_loss_bad_input():
    with pytest.raises(ValueError, match="beta"):
        VAELoss(beta=-1.0)
    with pytest.raises(ValueError, match="reconstruction"):
        VAELoss(reconstruction="l1")
    with pytest.raises(ValueError, match="x must have the shape"):
        VAELoss()(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 5), torch.tensor(0.0))
    with pytest.raises(ValueError, match="kl must be 0-dim"):
        VAELoss()(torch.rand(2, 4), torch.rand(2, 4), torch.zeros(2))


def test_image_pool_fills_then_mixes_and_resumes():
    pool = ImagePool(4)
    batches = [torch.full((3, 1, 2, 2), float(i)) for i in range(6)]
    torch.testing.assert_close(pool.query(batches[0]), batches[0])  # filling: returned as they are
    assert len(pool) == 3
    out = pool.query(batches[1])
    assert len(pool) == 4 and out[0].eq(1).all()  # the fourth slot was free
    state = pool.state_dict()
    rng = torch.get_rng_state()
    first = [pool.query(b) for b in batches[2:]]
    values = torch.cat(first).unique()
    assert values.numel() > 2 and set(values.tolist()) <= set(range(6))  # old images come back
    resumed = ImagePool(4)
    resumed.load_state_dict(state)
    torch.set_rng_state(rng)
    for a, b in zip(first, (resumed.query(b) for b in batches[2:])):
        torch.testing.assert_close(a, b)


def test_image_pool_size_zero_and_bad_size():
    x = torch.rand(2, 3, 4, 4)
    assert ImagePool(0).query(x) is x
    with pytest.raises(ValueError, match="size"):
        ImagePool(-1)
    with pytest.raises(ValueError, match="saved pool has size"):
        ImagePool(3).load_state_dict(ImagePool(4).state_dict())
