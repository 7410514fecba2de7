"""deepfast/train/step.py: each training step runs at tiny sizes, fused and reference give the same
losses from the same weights and noise, and a step trains (the weights change)."""

import pytest
import torch

from deepfast.train.step import MODELS, make_step

# batch and network sizes small enough for the three models to take well under a second each
TINY = {
    "vae": dict(batch=4, width=4, latent_dim=4),
    "dcgan": dict(batch=4, nz=8, ngf=4, ndf=4),
    "cyclegan": dict(batch=2, size=32, ngf=4, ndf=4, n_blocks=1),
}


@pytest.fixture(autouse=True)
def native_convs(monkeypatch):
    """Convs without oneDNN: its first call on each new conv shape costs seconds here, for nothing at these sizes."""
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)


def losses(step, seed: int) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(seed)
    return step()


@pytest.mark.parametrize("model", MODELS)
def test_fused_step_matches_reference(model):
    sizes = dict(TINY[model])
    batch = sizes.pop("batch")
    ref = make_step(model, "reference", batch, **sizes)
    fused = make_step(model, "fused", batch, **sizes)
    assert list(fused.models.state_dict()) == list(ref.models.state_dict())
    fused.models.load_state_dict(ref.models.state_dict())
    before = {name: {k: p.detach().clone() for k, p in net.named_parameters()} for name, net in fused.models.items()}
    want, got = losses(ref, 1), losses(fused, 1)
    assert len(got) == len(want) >= 1
    for g, w in zip(got, want):
        assert g.dim() == 0 and torch.isfinite(g)
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    for name, net in fused.models.items():  # every network trained
        assert any(not torch.equal(p, before[name][k]) for k, p in net.named_parameters())
    for g, w in zip(losses(fused, 2), losses(ref, 2)):  # a second step goes on from the first
        torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-4)


def test_make_step_rejects_unknown_model():
    with pytest.raises(ValueError, match="model must be one of"):
        make_step("gan", "fused", 2)
