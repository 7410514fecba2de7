"""deepfast.nn.Reparameterize: a VAE sampling head on the fused op."""

import pytest
import torch

import deepfast
from deepfast.ops import reparameterize_kl_reference


def test_training_samples_and_exposes_kl(backend_device):
    backend, device = backend_device
    layer = deepfast.nn.Reparameterize()
    mu, logvar = torch.randn(8, 5, device=device), torch.randn(8, 5, device=device)
    with deepfast.use_backend(backend):
        torch.manual_seed(0)
        z = layer(mu, logvar)
    torch.manual_seed(0)
    eps = torch.randn(mu.shape, device=device)
    want_z, want_kl = reparameterize_kl_reference(mu, logvar, eps, "batchmean")
    torch.testing.assert_close(z, want_z)
    torch.testing.assert_close(layer.kl, want_kl)


def test_eval_returns_the_mean_unless_asked_to_sample():
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    layer = deepfast.nn.Reparameterize(reduction="sum").eval()
    assert torch.equal(layer(mu, logvar), mu)
    torch.testing.assert_close(layer.kl, reparameterize_kl_reference(mu, logvar, mu, "sum")[1])
    sampling = deepfast.nn.Reparameterize(sample_in_eval=True).eval()
    assert not torch.equal(sampling(mu, logvar), mu)


def test_gradients_reach_the_encoder():
    encoder = torch.nn.Linear(6, 4)
    layer = deepfast.nn.Reparameterize()
    h = encoder(torch.randn(10, 6))
    z = layer(h[:, :2], h[:, 2:])
    (z.square().sum() + layer.kl).backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0


def test_bad_reduction_names_the_argument():
    with pytest.raises(ValueError, match="reduction must be one of"):
        deepfast.nn.Reparameterize(reduction="avg")
