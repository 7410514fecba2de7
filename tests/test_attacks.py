"""deepfast.attacks: the eps ball and the box, eps = 0, attacks that work (untargeted and targeted),
agreement with plain-torch loops, EOT = PGD for identity transforms, early stop, the model left as it
was, bad input, evaluate."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from deepfast._fixtures import train_lenet
from deepfast.attacks import (
    APGD,
    APGDDLR,
    APGDT,
    BIM,
    EOTPGD,
    FAB,
    FABT,
    FGSM,
    MIFGSM,
    PGD,
    GradientMaskingWarning,
    RandomTransform,
    Square,
    evaluate,
    generate_class,
    pgd_reference,
)
from deepfast.data import digits
from deepfast.models import LeNet


@pytest.fixture(scope="session")
def lenet() -> nn.Module:
    return train_lenet()


@pytest.fixture(scope="session")
def val() -> tuple[torch.Tensor, torch.Tensor]:
    data = digits("val", size=32)
    return data.images, data.labels


def correct_subset(model, images, labels, n):
    """The first n images the model classifies correctly."""
    with torch.no_grad():
        keep = model(images).argmax(1) == labels
    return images[keep][:n], labels[keep][:n]


def accuracy(model, images, labels) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


# Every attack, fast settings: name -> factory(model, eps) -> Attack.
ATTACKS = {
    "fgsm": lambda m, e: FGSM(m, e),
    "fgm-l2": lambda m, e: FGSM(m, e, norm="2"),
    "pgd": lambda m, e: PGD(m, e, steps=5, seed=1),
    "pgd-l2": lambda m, e: PGD(m, e, steps=5, norm="2", seed=1),
    "pgd-restarts": lambda m, e: PGD(m, e, steps=3, restarts=2, seed=1),
    "pgd-targeted": lambda m, e: PGD(m, e, steps=5, target="random", seed=1),
    "bim": lambda m, e: BIM(m, e, steps=5),
    "mifgsm": lambda m, e: MIFGSM(m, e, steps=5),
    "apgd": lambda m, e: APGD(m, e, steps=5, seed=1),
    "apgd-dlr-l2": lambda m, e: APGDDLR(m, e, steps=5, norm="2", seed=1),
    "apgd-t": lambda m, e: APGDT(m, e, steps=4, targets=2, seed=1),
    "fab": lambda m, e: FAB(m, e, steps=5),
    "fab-t-l2": lambda m, e: FABT(m, e, steps=5, targets=2, norm="2", restarts=2, seed=1),
    "fab-targeted": lambda m, e: FAB(m, e, steps=8, target="random", seed=1),
    "eot": lambda m, e: EOTPGD(m, e, steps=3, eot_samples=2, seed=1),
    "square": lambda m, e: Square(m, e, queries=40, seed=1),
    "square-l2": lambda m, e: Square(m, e, queries=200, norm="2", seed=1),
}


@pytest.mark.parametrize("eps", [0.03, 0.3])
@pytest.mark.parametrize("name", ATTACKS)
def test_inside_ball_and_box(lenet, val, name, eps):
    # 37 digits (0 and 1 pixels: on the box's edges) and 14 uniform noise images, in float64 in.
    x = torch.cat([val[0][:37], torch.rand(14, 1, 32, 32, generator=torch.Generator().manual_seed(2))]).double()
    y = torch.cat([val[1][:37], torch.randint(0, 10, (14,), generator=torch.Generator().manual_seed(3))])
    attack = ATTACKS[name](lenet, eps)
    x_before = x.clone()
    adv = attack(x, y)
    assert torch.equal(x, x_before)  # the input is not written to
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
    assert adv.min() >= 0 and adv.max() <= 1
    delta = (adv - x).flatten(1)
    if getattr(attack, "norm", "inf") == "2":
        assert delta.norm(dim=1).max() <= eps * (1 + 1e-6) + 1e-6
    else:
        assert delta.abs().max() <= eps + 1e-6
    # it moved something (FAB returns the images it found nothing for within eps, and those misclassified)
    assert delta.abs().max() > 0 or (
        isinstance(attack, FAB) and bool(((attack.last_norms > eps) | (attack.last_norms == 0)).all())
    )


@pytest.mark.parametrize("name", ATTACKS)
def test_eps_zero_returns_the_input(lenet, val, name):
    x, y = val[0][:21], val[1][:21]
    assert torch.equal(ATTACKS[name](lenet, 0.0)(x, y), x)


@pytest.mark.parametrize("name", ATTACKS)
def test_attacks_lower_accuracy(lenet, val, name):
    x, y = correct_subset(lenet, *val, 45)
    attack = ATTACKS[name](lenet, 3.0 if "l2" in name else 0.3)  # MNIST's usual Linf budget
    assert accuracy(lenet, attack(x, y), y) <= 0.5  # targeted (random targets) too


@pytest.mark.parametrize("target", ["int", "tensor", "function", "least_likely", "random"])
def test_targeted_pgd_reaches_the_target(lenet, val, target):
    x, y = correct_subset(lenet, *val, 31)
    goal = (y + 3) % 10
    spec = {
        "int": 7,
        "tensor": goal,
        "function": lambda images, labels: (labels + 3) % 10,
        "least_likely": "least_likely",
        "random": "random",
    }[target]
    adv = PGD(lenet, eps=0.3, alpha=0.03, steps=30, target=spec, seed=0)(x, y)
    with torch.no_grad():
        pred, clean = lenet(adv).argmax(1), lenet(x)
    expected = {
        "int": torch.full_like(y, 7),
        "tensor": goal,
        "function": goal,
        "least_likely": clean.argmin(1),
        "random": pred,
    }[target]
    assert (pred == expected).float().mean() >= 0.9
    if target == "random":
        assert (pred != y).all() and len(pred.unique()) > 2


def test_generate_class_from_noise_and_from_an_image(lenet, val):
    noise = generate_class(lenet, 4, shape=(5, 1, 32, 32), steps=30, seed=0)
    assert noise.shape == (5, 1, 32, 32) and noise.min() >= 0 and noise.max() <= 1
    with torch.no_grad():
        assert (lenet(noise).argmax(1) == 4).all()
    start = val[0][val[1] == 0][:3]  # zeros, turned into sixes within eps = 0.2
    six = generate_class(lenet, 6, start=start, eps=0.2, steps=30)
    assert (six - start).abs().max() <= 0.2 + 1e-6
    with torch.no_grad():
        assert (lenet(six).argmax(1) == 6).all()


@pytest.mark.parametrize(
    "norm,eps,alpha,momentum", [("inf", 8 / 255, 2 / 255, 0.0), ("2", 0.5, 0.1, 0.0), ("inf", 8 / 255, 1 / 255, 1.0)]
)
def test_pgd_matches_the_plain_torch_loop(lenet, val, norm, eps, alpha, momentum):
    x, y = val[0][:33], val[1][:33]
    cls = MIFGSM if momentum else functools.partial(PGD, random_start=False)
    adv = cls(lenet, eps, alpha, steps=7, norm=norm, early_stop=False)(x, y)
    expected = pgd_reference(lenet, x, y, eps, alpha, 7, norm, momentum)
    # the fused L2 step sums its norms in float64 on the CPU, the plain loop in float32: 1e-6 apart a step
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6 if norm == "inf" else 1e-5)


def test_restarts_keep_the_worst_case(lenet, val):
    # The first of the restarts is the single run (same seed): every sample it fools stays fooled, and
    # the others end with at least its loss.
    x, y = correct_subset(lenet, *val, 64)
    once = PGD(lenet, 4 / 255, steps=3, seed=5)(x, y)
    thrice = PGD(lenet, 4 / 255, steps=3, restarts=3, seed=5)(x, y)
    with torch.no_grad():
        logits_once, logits_thrice = lenet(once), lenet(thrice)
    fooled_once, fooled_thrice = logits_once.argmax(1) != y, logits_thrice.argmax(1) != y
    assert (fooled_thrice | ~fooled_once).all()
    assert 0 < fooled_once.sum() and (~fooled_thrice).sum() > 0
    loss_once = F.cross_entropy(logits_once, y, reduction="none")
    loss_thrice = F.cross_entropy(logits_thrice, y, reduction="none")
    assert (loss_thrice >= loss_once - 1e-4)[~fooled_thrice].all()
    assert not torch.equal(once[~fooled_thrice], thrice[~fooled_thrice])  # later restarts won somewhere


@pytest.mark.parametrize("random_start", [False, True])
def test_eot_with_identity_transforms_equals_pgd(lenet, val, random_start):
    x, y = val[0][:29], val[1][:29]
    pgd = PGD(lenet, 8 / 255, 2 / 255, steps=5, random_start=random_start, seed=3)(x, y)
    eot = EOTPGD(
        lenet, 8 / 255, 2 / 255, steps=5, random_start=random_start, seed=3, transform=RandomTransform(), eot_samples=3
    )(x, y)
    torch.testing.assert_close(eot, pgd, rtol=0, atol=1e-6)


def test_random_transform_is_differentiable_and_random():
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    t = RandomTransform(scale=(0.8, 1.2), rotation=20.0, translate=0.1, brightness=0.1, noise=0.05)
    out = t(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, t(x, torch.Generator().manual_seed(1)))
    (g,) = torch.autograd.grad(out.sum(), x)
    assert g.abs().sum() > 0
    assert RandomTransform()(x) is x


def test_early_stop_never_moves_a_fooled_sample_again():
    # A float64 linear model (per-sample gradients independent of the batch): the early-stopped result
    # of each sample is the first point of its own no-early-stop trajectory that the model gets wrong.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double()
    x = torch.rand(41, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    steps, eps = 8, 0.1
    trajectory = [x] + [BIM(model, eps, 0.02, steps=k, early_stop=False)(x, y) for k in range(1, steps + 1)]
    with torch.no_grad():
        wrong = torch.stack([model(t).argmax(1) != y for t in trajectory])  # (steps + 1, N)
    first = torch.where(wrong.any(0), wrong.int().argmax(0), steps)
    expected = torch.stack(trajectory)[first, torch.arange(len(y))]
    assert 0 < (first < steps).sum() < len(y) and len(first.unique()) > 2  # fooled at various steps
    seen = []
    model.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    adv = BIM(model, eps, 0.02, steps=steps, early_stop=True)(x, y)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)
    # the batch shrinks: each step runs only the samples not fooled before it
    assert seen == [int((first >= k).sum()) for k in range(steps) if (first >= k).any()]


class Recorder(nn.Module):
    """Wraps a model; records its training flag, whether grad mode was on and the input at each forward."""

    def __init__(self, model):
        super().__init__()
        self.model, self.modes, self.grad_modes, self.inputs = model, [], [], []

    def forward(self, x):
        self.modes.append(self.model.training)
        self.grad_modes.append(torch.is_grad_enabled())
        self.inputs.append(x.detach())
        return self.model(x)


@pytest.mark.parametrize("name", ATTACKS)
def test_model_mode_parameters_and_grads_untouched(lenet, val, name):
    model = Recorder(LeNet())
    model.load_state_dict({f"model.{k}": v for k, v in lenet.state_dict().items()})
    model.train()
    model.model.classifier.eval()  # mixed modes must come back as they were
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    model.model.classifier[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    ATTACKS[name](model, 0.1)(val[0][:17], val[1][:17])
    assert model.modes and not any(model.modes)  # eval mode inside
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    for k, v in model.state_dict().items():  # parameters and BatchNorm buffers
        assert torch.equal(v, before[k]), k
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad, g)


def test_square_never_runs_backward(lenet, val):
    model = Recorder(lenet)
    x, y = correct_subset(lenet, *val, 40)
    square = Square(model, 0.3, queries=60, seed=0)
    adv = square(x, y)
    assert model.grad_modes and not any(model.grad_modes)
    assert accuracy(lenet, adv, y) <= 0.5
    with torch.no_grad():
        fooled = lenet(adv).argmax(1) != y
    used = square.last_queries
    assert used.min() >= 1 and used.max() <= 60 and (used[~fooled] == 60).all() and used[fooled].float().mean() < 60
    assert sum(len(batch) for batch in model.inputs) == used.sum()  # one image evaluated per query


def test_targeted_square_reaches_the_target(lenet, val):
    x, y = val[0][:21], val[1][:21]
    adv = Square(lenet, 0.3, queries=200, target=lambda images, labels: (labels + 1) % 10, seed=0)(x, y)
    with torch.no_grad():
        assert (lenet(adv).argmax(1) == (y + 1) % 10).float().mean() >= 0.9


def test_normalization_is_the_same_as_a_normalizing_first_layer(lenet, val):
    mean, std = 0.3, 0.2

    class Normalized(nn.Module):  # the model a user trained on (x - mean) / std
        def __init__(self):
            super().__init__()
            self.net = lenet

        def forward(self, x):
            return self.net((x - mean) / std)

    x, y = val[0][:19], val[1][:19]
    plain = PGD(Normalized(), 8 / 255, steps=4, seed=0)(x, y)
    torch.testing.assert_close(
        PGD(lenet, 8 / 255, steps=4, seed=0, normalization=([mean], [std]))(x, y), plain, rtol=0, atol=0
    )


def test_bad_input_names_the_argument(lenet, val):
    x, y = val[0][:5], val[1][:5]
    pgd = PGD(lenet, steps=1)
    with pytest.raises(ValueError, match="labels"):
        pgd(x, y[:4])
    with pytest.raises(ValueError, match="labels"):
        pgd(x, y.view(5, 1))
    with pytest.raises(TypeError, match="labels"):
        pgd(x, y.float())
    with pytest.raises(ValueError, match="labels"):
        pgd(x)
    with pytest.raises(ValueError, match="images"):
        pgd(x * 2, y)
    with pytest.raises(ValueError, match="images"):
        pgd(x - 0.5, y)
    with pytest.raises(ValueError, match="images"):
        pgd(x.flatten()[:5], y)  # no batch of images
    for bad in (10, -1):  # not a class of the model: before any loss reads it, on the first call and later ones
        for attack in (PGD(lenet, steps=1), Square(lenet, queries=2)):
            for _ in range(2):
                with pytest.raises(ValueError, match=r"labels must hold class indices in \[0, 10\)"):
                    attack(x, torch.cat([y[:4], torch.tensor([bad])]))
            attack(x, y)  # and the attack still works
    with pytest.raises(ValueError, match="target must hold class indices"):
        PGD(lenet, steps=1, target=torch.full((5,), 12))(x, y)
    with pytest.raises(ValueError, match="amp"):
        PGD(lenet, amp="fp8")
    for cls in (FGSM, PGD, Square):
        with pytest.raises(ValueError, match="eps"):
            cls(lenet, eps=-0.1)
    with pytest.raises(ValueError, match="alpha"):
        PGD(lenet, alpha=-1.0)
    with pytest.raises(ValueError, match="steps"):
        PGD(lenet, steps=0)
    with pytest.raises(ValueError, match="norm"):
        PGD(lenet, norm="1")
    with pytest.raises(ValueError, match="restarts"):
        PGD(lenet, restarts=2, random_start=False)
    with pytest.raises(ValueError, match="target"):
        PGD(lenet, steps=1, target=10)(x, y)
    with pytest.raises(ValueError, match="target"):
        PGD(lenet, target="most_likely")
    with pytest.raises(ValueError, match="normalization"):
        PGD(lenet, normalization=([0.5], [0.0]))
    with pytest.raises(ValueError, match="queries"):
        Square(lenet, queries=0)
    with pytest.raises(ValueError, match="eot_samples"):
        EOTPGD(lenet, eot_samples=0)


def test_model_returning_the_wrong_shape():
    x, y = torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 0])
    for model in (
        nn.Sequential(nn.Flatten(), nn.Linear(16, 2), nn.Flatten(0)),  # (N * 2,)
        nn.Sequential(nn.Flatten(), nn.Linear(16, 1)),  # one logit
        nn.Conv2d(1, 2, 1),
    ):  # (N, 2, 4, 4)
        for attack in (PGD(model, steps=1), Square(model, queries=2)):
            with pytest.raises(ValueError, match="model must return logits"):
                attack(x, y)


def test_evaluate_worst_case_over_attacks(lenet, val):
    x, y = val[0][:70].double(), val[1][:70]  # float64 images for a float32 model
    eps = [0.0, 4 / 255, 0.1]
    bim = functools.partial(BIM, steps=5)  # deterministic per sample, whichever samples run with it
    both = evaluate(lenet, (x, y), attacks=["fgsm", bim], eps=eps, batch_size=32, progress=False)
    alone = evaluate(lenet, (x, y), attacks=[bim], eps=eps, batch_size=32, progress=False)
    clean = accuracy(lenet, x.float(), y)
    assert both.n == 70 and both.clean_accuracy == pytest.approx(clean)
    assert both.robust_accuracy[0] == pytest.approx(clean) and both.mean_linf[0] != both.mean_linf[0]  # NaN
    assert both.robust_accuracy[2] < both.robust_accuracy[1] < clean
    assert list(both.accuracy_after) == ["FGSM", "BIM"]
    for i in range(3):
        assert both.robust_accuracy[i] <= min(both.accuracy_after["FGSM"][i], alone.robust_accuracy[i]) + 1e-12
    assert 0 < both.mean_linf[2] <= 0.1 + 1e-6 and both.mean_l2[2] > both.mean_linf[2]
    table = both.table()
    assert "after FGSM" in table and "robust" in table and len(table.splitlines()) == 2 + 1 + 3


def test_evaluate_warns_of_gradient_masking(lenet, val):
    class Masked(nn.Module):  # gradients are zero: white-box PGD from the image cannot move
        def forward(self, x):
            return lenet(x.detach()) + 0 * x.sum()

    x, y = correct_subset(lenet, *val, 20)
    attacks = [functools.partial(PGD, random_start=False, steps=2), functools.partial(Square, queries=60, seed=0)]
    with pytest.warns(GradientMaskingWarning, match="gradient masking"):
        result = evaluate(Masked(), (x, y), attacks=attacks, eps=[0.2], progress=False)
    assert result.accuracy_after["PGD"] == [1.0] and result.black_box_only[0] > 0
    with warnings.catch_warnings():  # PGD through the true gradient fools every sample: Square has none left
        warnings.simplefilter("error", GradientMaskingWarning)
        result = evaluate(lenet, (x, y), attacks=[functools.partial(PGD, seed=0), "square"], eps=[0.3], progress=False)
    assert result.robust_accuracy == [0.0] and result.black_box_only == [0]


def test_evaluate_bad_input(lenet, val):
    x, y = val[0][:4], val[1][:4]
    with pytest.raises(ValueError, match="eps"):
        evaluate(lenet, (x, y), eps=[-1.0], progress=False)
    with pytest.raises(ValueError, match="attacks"):
        evaluate(lenet, (x, y), attacks=["cw"], progress=False)
    with pytest.raises(ValueError, match="labels"):
        evaluate(lenet, [(x, y[:3])], progress=False)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_attacks_run_under_no_grad_and_inference_mode(lenet, val, mode):
    x, y = val[0][:9], val[1][:9]
    expected = PGD(lenet, 0.1, steps=3, seed=0)(x, y)
    with torch.no_grad() if mode == "no_grad" else torch.inference_mode():
        if mode == "inference_mode":
            x, y = x.clone(), y.clone()  # inference tensors
        adv = PGD(lenet, 0.1, steps=3, seed=0)(x, y)
    torch.testing.assert_close(adv, expected, rtol=0, atol=0)
