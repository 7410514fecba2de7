"""APGD: its checkpoints and DLR loss against the paper's definitions, at least PGD's strength for the
same steps, targets, and bad settings. (The ball, the box, eps 0, the model left untouched: the
generic tests of tests/test_attacks.py, where APGD is one of ATTACKS.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepfast.attacks import APGD, APGDDLR, PGD, dlr_loss, evaluate
from deepfast.attacks.apgd import checkpoints
from deepfast.cli.robustness import attack_names
from tests.test_attacks import accuracy, correct_subset, lenet, val  # noqa: F401 (fixtures)


def test_checkpoints_are_the_reference_implementations():
    # the paper's for 100 steps; for any count, the step counter of the reference implementation
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    for steps in (1, 2, 5, 10, 17, 50, 100, 333):
        period, shrink, least = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
        expected, counter = [0], 0
        for i in range(steps):
            counter += 1
            if counter == period:
                expected.append(i + 1)
                counter, period = 0, max(period - shrink, least)
        assert checkpoints(steps) == expected, steps
    assert checkpoints(10) == [0, 2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_dlr_loss_is_the_formula():
    torch.manual_seed(0)
    logits = torch.randn(50, 7, dtype=torch.float64)
    labels = torch.randint(0, 7, (50,))
    expected = []
    for z, y in zip(logits.tolist(), labels.tolist()):
        ranked = sorted(z, reverse=True)
        other = max(v for i, v in enumerate(z) if i != y)
        expected.append(-(z[y] - other) / (ranked[0] - ranked[2] + 1e-12))
    got = dlr_loss(logits, labels)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dlr_loss(3 * logits + 5, labels), got, rtol=1e-9, atol=1e-9)  # scale, shift
    correct = logits.argmax(1) == labels
    assert (got[correct] <= 0).all() and (got[~correct] > 0).all()


@pytest.mark.parametrize("cls", [APGD, APGDDLR])
def test_apgd_is_at_least_as_strong_as_pgd(lenet, val, cls):
    x, y = correct_subset(lenet, *val, 200)
    eps, steps = 3 / 255, 20
    robust_pgd = accuracy(lenet, PGD(lenet, eps, steps=steps, seed=0)(x, y), y)
    robust_apgd = accuracy(lenet, cls(lenet, eps, steps=steps, seed=0)(x, y), y)
    assert 0.3 < robust_pgd < 1  # a budget where PGD fools some, not all
    assert robust_apgd <= robust_pgd


def test_targeted_apgd_reaches_the_target(lenet, val):
    x, y = correct_subset(lenet, *val, 64)
    target = (y + 1) % 10
    adv = APGD(lenet, 0.3, steps=20, target=target, seed=0)(x, y)
    with torch.no_grad():
        assert (lenet(adv).argmax(1) == target).float().mean() > 0.9
    assert (adv - x).abs().max() <= 0.3 + 1e-6


def test_apgd_bad_settings_name_the_argument(lenet, val):
    x, y = val[0][:4], val[1][:4]
    with pytest.raises(ValueError, match="loss"):
        APGD(lenet, loss="hinge")
    with pytest.raises(ValueError, match='loss="dlr" is untargeted'):
        APGD(lenet, loss="dlr", target=3)
    with pytest.raises(ValueError, match="rho"):
        APGD(lenet, rho=1.5)
    with pytest.raises(ValueError, match="steps"):
        APGD(lenet, steps=0)
    with pytest.raises(TypeError, match="APGD does not take early_stop"):
        APGD(lenet, early_stop=True)
    two_classes = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 2))
    with pytest.raises(ValueError, match='loss="dlr" needs a model of at least 3 classes'):
        APGDDLR(two_classes, steps=2)(x, y % 2)


def test_evaluate_and_the_cli_know_apgd_by_name(lenet, val):
    x, y = correct_subset(lenet, *val, 100)
    pgd_only = evaluate(lenet, (x, y), attacks=["pgd"], eps=[3 / 255], progress=False)
    both = evaluate(lenet, (x, y), attacks=["pgd", "apgd", "apgd-dlr"], eps=[3 / 255], progress=False)
    assert list(both.accuracy_after) == ["PGD", "APGD", "APGDDLR"]
    assert both.robust_accuracy[0] <= pgd_only.robust_accuracy[0]
    assert attack_names("apgd,apgd-dlr") == ["apgd", "apgd-dlr"]
