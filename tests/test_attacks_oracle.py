"""torchattacks (3.5.1) as an oracle, on the tests' LeNet and fixed seeds: FGSM, PGD and MI-FGSM give its
adversarial examples; APGD its per-sample outcome from the same start; FAB its minimal norms over a few
steps; the AutoAttack preset fools every sample that torchattacks' AutoAttack fools. Skipped where
torchattacks is not installed (``make test`` installs it)."""

from __future__ import annotations

import pytest
import torch

from deepfast.attacks import APGD, FAB, FGSM, MIFGSM, PGD, AutoAttack
from tests.test_attacks import correct_subset, lenet, val  # noqa: F401 (fixtures)

torchattacks = pytest.importorskip(
    "torchattacks",
    reason="torchattacks (a test-only oracle) is not installed; "
    "`make test` installs it (pip install --no-deps torchattacks)",
)

pytestmark = pytest.mark.usefixtures("one_thread")

TORCHATTACKS_NORM = {"inf": "Linf", "2": "L2"}


def fooled(model, images, labels):
    with torch.no_grad():
        return model(images).argmax(1) != labels


def test_fgsm_pgd_and_mifgsm_give_torchattacks_examples(lenet, val):
    x, y = val[0][:48], val[1][:48]
    pairs = [
        (FGSM(lenet, 8 / 255, early_stop=False), torchattacks.FGSM(lenet, eps=8 / 255)),
        (
            PGD(lenet, 8 / 255, 2 / 255, 10, random_start=False, early_stop=False),
            torchattacks.PGD(lenet, eps=8 / 255, alpha=2 / 255, steps=10, random_start=False),
        ),
        (
            MIFGSM(lenet, 8 / 255, 1 / 255, 10, early_stop=False),
            torchattacks.MIFGSM(lenet, eps=8 / 255, alpha=1 / 255, steps=10, decay=1.0),
        ),
    ]
    for ours, theirs in pairs:
        adv = ours(x, y)
        torch.testing.assert_close(adv, theirs(x, y), rtol=0, atol=1e-6, msg=lambda m: f"{ours.name}: {m}")
        assert 0 < fooled(lenet, adv, y).sum() < len(y)


def torchattacks_start(x, eps, norm, seed):
    """The random start of torchattacks' APGD after torch.manual_seed(seed): a uniform cube draw scaled
    to largest element eps (Linf), a Gaussian scaled to norm eps (L2), clipped to the box."""
    torch.manual_seed(seed)
    if norm == "inf":
        t = 2 * torch.rand(x.shape) - 1
        return (x + eps * t / t.flatten(1).abs().amax(1).view(-1, 1, 1, 1)).clamp(0, 1)
    t = torch.randn(x.shape)
    return (x + eps * t / (t.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)).clamp(0, 1)


@pytest.mark.parametrize("norm,eps", [("inf", 8 / 255), ("2", 0.6)])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_has_torchattacks_outcome_from_the_same_start(lenet, val, monkeypatch, norm, eps, loss):
    # torchattacks runs APGD on the samples it classifies correctly, from its own random start: the same
    # samples here, and deepfast's APGD given that start. Its steps halve at the same checkpoints
    # (20 steps: 4, 7, 9, 11, ...) by the same rules; the two differ in rounding only (the L2 step).
    x, y = correct_subset(lenet, *val, 64)
    start = torchattacks_start(x, eps, norm, seed=3)
    monkeypatch.setattr("deepfast.attacks.apgd.pgd_random_start", lambda x0, *args, **kwargs: start.clone())
    adv = APGD(lenet, eps, steps=20, norm=norm, loss=loss)(x, y)
    theirs = torchattacks.APGD(lenet, norm=TORCHATTACKS_NORM[norm], eps=eps, steps=20, loss=loss, seed=3)(x, y)
    ours_fooled, their_fooled = fooled(lenet, adv, y), fooled(lenet, theirs, y)
    assert 0.2 < ours_fooled.float().mean() < 0.9  # a budget where the outcome varies
    assert torch.equal(ours_fooled, their_fooled)


@pytest.mark.parametrize("norm", ["inf", "2"])
@pytest.mark.parametrize("targets", [None, 3])
def test_fab_finds_torchattacks_minimal_norms(lenet, val, norm, targets):
    # early_stop=False and a budget no sample exceeds: every success is returned, as in torchattacks;
    # over 5 steps the two agree to rounding (later, rounding can send a trajectory another way).
    x, y = correct_subset(lenet, *val, 48)
    ours = FAB(lenet, 100.0, steps=5, norm=norm, targets=targets, early_stop=False)
    adv = ours(x, y)
    theirs = torchattacks.FAB(
        lenet,
        norm=TORCHATTACKS_NORM[norm],
        eps=100.0,
        steps=5,
        multi_targeted=targets is not None,
        n_classes=(targets or 9) + 1,
    )(x, y)
    found = fooled(lenet, theirs, y)
    assert torch.equal(fooled(lenet, adv, y), found) and 0 < found.sum()
    d = (theirs - x).flatten(1)
    their_norms = d.abs().amax(1) if norm == "inf" else d.norm(dim=1)
    torch.testing.assert_close(ours.last_norms[found], their_norms[found], rtol=1e-3, atol=1e-5)
    assert (ours.last_norms[~found] == torch.inf).all()


@pytest.fixture(scope="module")
def mlp():
    """A small MLP on the 8x8 digits (fast enough for the whole ensemble: 5000 Square queries) and 40
    validation digits it classifies correctly."""
    from torch import nn
    from torch.nn import functional as F

    from deepfast.data import digits

    torch.manual_seed(0)
    train, held_out = digits("train", size=8), digits("val", size=8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = F.cross_entropy(model(train.images), train.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, *correct_subset(model, held_out.images, held_out.labels, 40)


@pytest.mark.parametrize("norm,eps", [("inf", 8 / 255), ("2", 0.5)])
def test_autoattack_is_at_least_as_strong_as_torchattacks_autoattack(mlp, norm, eps):
    model, x, y = mlp
    theirs = torchattacks.AutoAttack(
        model, norm=TORCHATTACKS_NORM[norm], eps=eps, version="standard", n_classes=10, seed=0
    )(x, y)
    their_fooled = fooled(model, theirs, y)
    adv = AutoAttack(model, eps, norm=norm)(x, y)
    ours_fooled = fooled(model, adv, y)
    assert 0 < their_fooled.sum() < len(y)
    assert (ours_fooled | ~their_fooled).all()  # every sample theirs fools, ours fools
    d = (adv - x).flatten(1)
    assert (d.norm(dim=1) if norm == "2" else d.abs().amax(1)).max() <= eps + 1e-5
