"""FAB, FAB-T, APGD-T, L2 Square and the AutoAttack preset against their definitions. (The ball, the box,
eps 0, lower accuracy and the untouched model: the generic tests of tests/test_attacks.py; agreement
with torchattacks: tests/test_attacks_oracle.py.)"""

from __future__ import annotations

import pytest
import torch

from deepfast.attacks import APGDT, FAB, FABT, AutoAttack, Square, autoattack, dlr_targeted_loss, evaluate
from deepfast.attacks.fab import boundary_step
from deepfast.attacks.square import pseudo_gaussian
from tests.test_attacks import accuracy, correct_subset, lenet, val  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")


def bisection_step(p, w, b, norm, iters=200):
    """The plain reference of ``boundary_step`` in float64: per point, tau by bisection on
    h(tau) = <w, clip(p + step(tau)) - p> towards the hyperplane, the step sign(r w) min(tau c, room)."""
    out = torch.zeros_like(p)
    for i in range(p.shape[0]):
        r = float(b[i] - w[i] @ p[i])
        v = (1.0 if r >= 0 else -1.0) * w[i]
        room = torch.where(v > 0, 1 - p[i], p[i])
        c = v.abs() if norm == "2" else (v != 0).double()

        def step(tau):
            return torch.sign(v) * torch.minimum(tau * c, room)

        hi = 1.0
        while float(v @ step(hi)) < abs(r) and hi < 1e12:
            hi *= 2
        lo = 0.0
        for _ in range(iters):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if float(v @ step(mid)) < abs(r) else (lo, mid)
        out[i] = step(hi)
    return out


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_boundary_step_is_the_smallest_step_onto_the_hyperplane_in_the_box(norm):
    g = torch.Generator().manual_seed(0)
    m, d = 23, 37
    p = torch.rand(m, d, generator=g, dtype=torch.float64)
    p[:, :5] = torch.randint(0, 2, (m, 5), generator=g).double()  # on the box's faces
    w = torch.randn(m, d, generator=g, dtype=torch.float64)
    w[:, 5:9] = 0  # coordinates that do not count
    b = (w * p).sum(1) + torch.randn(m, generator=g, dtype=torch.float64) * torch.linspace(0, 4, m, dtype=torch.float64)
    b[-1] = (w[-1] * p[-1]).sum()  # already on it
    b[-2] = w[-2].clamp_min(0).sum() + 1.0  # the box cannot reach it: the step to the nearest corner
    step = boundary_step(p, w, b, norm)
    torch.testing.assert_close(step, bisection_step(p, w, b, norm), rtol=1e-9, atol=1e-9)
    q = p + step
    assert (q >= -1e-12).all() and (q <= 1 + 1e-12).all() and (step[:, 5:9] == 0).all()
    torch.testing.assert_close((w * q).sum(1)[:-2], b[:-2], rtol=1e-9, atol=1e-9)  # on the hyperplane
    assert (step[-1] == 0).all()
    torch.testing.assert_close(q[-2], (w[-2] > 0).double() + (w[-2] == 0) * p[-2])  # the corner
    size = step.abs().amax(1) if norm == "inf" else step.norm(dim=1)
    for _ in range(20):  # no other step onto the hyperplane in the box is smaller: scaled random ones
        other = torch.rand(m, d, generator=g, dtype=torch.float64) * torch.where(
            w * (b - (w * p).sum(1))[:, None] > 0, 1 - p, -p
        )
        scale = ((b - (w * p).sum(1)) / (w * other).sum(1))[:, None]
        ok = ((scale >= 0) & (scale <= 1)).squeeze(1)  # the scaled step stays in the box
        other = other * scale
        other_size = other.abs().amax(1) if norm == "inf" else other.norm(dim=1)
        assert (size[ok][:-2] <= other_size[ok][:-2] + 1e-9).all() if ok[:-2].any() else True


@pytest.mark.parametrize("norm,eps", [("inf", 0.1), ("2", 1.0)])
def test_fab_finds_small_perturbations_and_early_stop_keeps_the_outcome(lenet, val, norm, eps):
    x, y = correct_subset(lenet, *val, 40)
    full = FAB(lenet, eps, steps=15, norm=norm, early_stop=False)
    adv_full = full(x, y)
    seen = []
    hook = lenet.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    try:
        stopped = FAB(lenet, eps, steps=15, norm=norm)
        adv = stopped(x, y)
    finally:
        hook.remove()
    fooled = accuracy(lenet, adv, y) < 1
    assert fooled and 0 < (stopped.last_norms <= eps).sum() < len(y)  # some within eps, not all
    with torch.no_grad():
        wrong, wrong_full = lenet(adv).argmax(1) != y, lenet(adv_full).argmax(1) != y
    within = stopped.last_norms <= eps
    assert torch.equal(wrong, within) and torch.equal(wrong_full, full.last_norms <= eps)
    assert torch.equal(within, full.last_norms <= eps)  # the same outcome; without early stop norms only shrink
    assert (full.last_norms <= stopped.last_norms + 1e-6).all()
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "inf" else d.norm(dim=1)
    torch.testing.assert_close(size[within], stopped.last_norms[within])
    assert (d[~within] == 0).all()  # the image where nothing within eps was found
    assert min(seen[2:]) < len(y)  # the batch shrank


def test_fab_t_and_targeted_fab(lenet, val):
    x, y = correct_subset(lenet, *val, 30)
    fab_t = FABT(lenet, 0.15, steps=10, targets=3)
    adv = fab_t(x, y)
    assert accuracy(lenet, adv, y) < 0.5 and (adv - x).abs().max() <= 0.15 + 1e-6
    target = (y + 1) % 10
    reached = FAB(lenet, 0.3, steps=20, target=target)(x, y)
    with torch.no_grad():
        assert (lenet(reached).argmax(1) == target).float().mean() > 0.8
    with pytest.raises(ValueError, match="targets .* or target"):
        FAB(lenet, targets=3, target=1)
    for kwargs, name in (
        ({"steps": 0}, "steps"),
        ({"norm": "1"}, "norm"),
        ({"beta": 0.0}, "beta"),
        ({"alpha_max": 2.0}, "alpha_max"),
        ({"targets": 0}, "targets"),
    ):
        with pytest.raises(ValueError, match=name):
            FAB(lenet, **kwargs)


def test_targeted_dlr_is_the_formula():
    torch.manual_seed(0)
    logits = torch.randn(40, 6, dtype=torch.float64)
    y, t = torch.randint(0, 6, (40,)), torch.randint(0, 6, (40,))
    expected = []
    for z, yi, ti in zip(logits.tolist(), y.tolist(), t.tolist()):
        r = sorted(z, reverse=True)
        expected.append(-(z[yi] - z[ti]) / (r[0] - (r[2] + r[3]) / 2 + 1e-12))
    torch.testing.assert_close(dlr_targeted_loss(logits, y, t), torch.tensor(expected, dtype=torch.float64))


def test_apgdt_tries_the_most_likely_classes_in_turn(lenet, val):
    x, y = correct_subset(lenet, *val, 60)
    eps = 3 / 255
    one = accuracy(lenet, APGDT(lenet, eps, steps=10, targets=1, seed=0)(x, y), y)
    three = accuracy(lenet, APGDT(lenet, eps, steps=10, targets=3, seed=0)(x, y), y)
    assert three <= one < 1  # the first class's run is the same; later ones only add fooled samples
    with pytest.raises(TypeError, match="APGDT takes no loss or target"):
        APGDT(lenet, loss="ce")


def test_pseudo_gaussian_pattern_and_l2_square_start():
    p = pseudo_gaussian(7, torch.zeros(()))
    assert p.shape == (7, 7) and torch.linalg.vector_norm(p) == pytest.approx(1.0)
    top, bottom = p[:3], -p[3:]
    assert (top > 0).all() and (bottom > 0).all()
    # the upper half: sum_{n >= d} 1/(n+1)^2, d the Chebyshev distance to its center (1, 3), scaled
    d = torch.maximum((torch.arange(3) - 1).abs()[:, None], (torch.arange(7) - 3).abs()[None, :])
    tail = torch.tensor([sum(1 / (n + 1) ** 2 for n in range(k, 4)) for k in range(4)])
    torch.testing.assert_close(top / top.max(), tail[d] / tail[d].max())
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 20 * 20, 5))
    x = torch.rand(6, 3, 20, 20)
    sq = Square(model, 0.7, queries=1, norm="2", seed=0)
    start = sq(x, torch.zeros(6, dtype=torch.int64))
    norms = (start - x).flatten(1).norm(dim=1)
    assert (norms <= 0.7 + 1e-5).all() and (norms > 0.3).all()  # scaled to eps, then clipped to the box


def test_autoattack_preset_is_the_papers_ensemble_and_at_least_as_strong_as_its_parts(lenet, val):
    x, y = correct_subset(lenet, *val, 24)
    fs = autoattack(norm="2", steps=3)
    attacks = [f(lenet, eps=0.5) for f in fs]
    assert [type(a).__name__ for a in attacks] == ["APGD", "APGDT", "FABT", "Square"]
    assert [a.norm for a in attacks] == ["2"] * 4 and attacks[3].queries == 5000 and attacks[1].targets == 9
    assert attacks[0].steps == attacks[1].steps == attacks[2].steps == 3
    full = [f(lenet, eps=8 / 255) for f in autoattack()]
    assert [a.steps for a in full[:3]] == [100, 100, 100] and full[2].targets == 9
    eps, fast = 8 / 255, {"steps": 5, "queries": 300}
    aa = AutoAttack(lenet, eps, **fast)
    adv = aa(x, y)
    with torch.no_grad():
        fooled = lenet(adv).argmax(1) != y
    assert torch.equal(fooled, aa.last_fooled_by >= 0) and (adv - x).abs().max() <= eps + 1e-6
    # one batch, seeded with 0 + 0: the same attacks on the same samples as AutoAttack(seed=0)
    table = evaluate(lenet, (x, y), attacks=autoattack(**fast), eps=[eps], batch_size=len(y), progress=False)
    assert list(table.accuracy_after) == ["APGD", "APGDT", "FABT", "Square"]
    assert table.robust_accuracy[0] * len(y) == pytest.approx(int((~fooled).sum()))
    assert table.accuracy_after["APGD"][0] * len(y) == pytest.approx(int((aa.last_fooled_by != 0).sum()))
    assert table.robust_accuracy[0] <= table.accuracy_after["APGD"][0] < 1
