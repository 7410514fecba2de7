"""deepfast.defenses and the robust losses: the losses equal their formulas (float64), adversarial
training runs in the classifier trainer, resumes exactly and at eps 0 is standard training, its eps
warm-up follows its schedule and resumes exactly, its CLI flags, the activation detector separates
clean from PGD examples, the adaptive attack evades it."""

import json
import math

import pytest
import torch
from torch import nn

from conftest import registered, tiny_digits
from deepfast import cli
from deepfast.attacks import PGD
from deepfast.defenses import AdversarialTraining, TradesPGD
from deepfast.defenses.detection import (
    ActivationDetector,
    AdaptivePGD,
    detection_auc,
    detection_report,
    find_layer,
    fit_detector,
)
from deepfast.losses.robust import adversarial_training_loss, logit_pairing_loss, trades_loss
from deepfast.train import TrainConfig, load_checkpoint, make_trainer


def tiny(split="train", size=32, value_range=(0.0, 1.0)):
    """The first 48 digits (train) or the next 24 (val)."""
    return tiny_digits(split, size, value_range, n=48)


@pytest.fixture(autouse=True)
def tiny_data():
    with registered(tiny=tiny):
        yield


pytestmark = pytest.mark.usefixtures("one_thread")


def config(out, options=None, **kw):
    fields = dict(
        model="classifier",
        data="tiny",
        out=str(out),
        batch_size=16,
        epochs=2,
        progress=False,
        sample_every=0,
        device="cpu",
        options=options or {},
    )
    fields.update(kw)
    return TrainConfig(**fields)


ADV = {"adversarial": "pgd", "eps": 0.1, "adv_steps": 2}


def assert_same_weights(a, b):
    """The models of trainers a and b are equal, bit for bit."""
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


# ------------------------------------------------------------------------------------------ losses
def ce(logits, y):
    """Mean cross-entropy, written out: -(z_y - log sum_k exp z_k)."""
    return -sum(logits[i, y[i]] - torch.log(torch.exp(logits[i]).sum()) for i in range(len(y))) / len(y)


def test_losses_equal_their_formulas_in_float64():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3
    za = torch.randn(5, 4, generator=g, dtype=torch.float64) * 3
    y = torch.tensor([0, 3, 1, 1, 2])
    pair = sum(((z[i] - za[i]) ** 2).sum() for i in range(5)) / 5
    p, q = torch.exp(z) / torch.exp(z).sum(1, keepdim=True), torch.exp(za) / torch.exp(za).sum(1, keepdim=True)
    kl = sum((p[i] * torch.log(p[i] / q[i])).sum() for i in range(5)) / 5
    cases = [
        (adversarial_training_loss(z, za, y, 0.7), ce(z, y) + 0.7 * ce(za, y)),
        (adversarial_training_loss(z, za, y, 1.0, clean=False), ce(za, y)),
        (logit_pairing_loss(z, za, y, 0.3), ce(z, y) + 0.3 * pair),
        (logit_pairing_loss(z, za, y, 0.3, mixed=True), (ce(z, y) + ce(za, y)) / 2 + 0.3 * pair),
        (trades_loss(z, za, y, 6.0), ce(z, y) + 6.0 * kl),
    ]
    for got, want in cases:
        assert got.dtype == torch.float64 and got.dim() == 0
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert trades_loss(z, z, y).item() == pytest.approx(ce(z, y).item(), abs=1e-12)  # KL(p || p) = 0


def test_losses_send_gradients_to_both_logits_and_reject_bad_input():
    z = torch.randn(3, 4, requires_grad=True)
    za = torch.randn(3, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2])
    (logit_pairing_loss(z, za, y) + trades_loss(z, za, y)).backward()
    assert z.grad.abs().sum() > 0 and za.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="lam must be finite and >= 0"):
        adversarial_training_loss(z, za, y, -1.0)
    with pytest.raises(ValueError, match="beta must be finite and >= 0"):
        trades_loss(z, za, y, -2.0)
    with pytest.raises(ValueError, match=r"logits_adv must have the shape of logits \(3, 4\)"):
        logit_pairing_loss(z, za[:2], y)
    with pytest.raises(ValueError, match="labels must be an integer tensor of shape"):
        trades_loss(z, za, y.float())


def test_trades_pgd_raises_the_kl_within_the_ball():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = torch.rand(6, 1, 4, 4) * 0.5 + 0.25
    y = torch.zeros(6, dtype=torch.int64)
    adv = TradesPGD(model, eps=0.1, steps=5, seed=0)(x, y)
    noise = (x + (torch.rand(x.shape) * 2 - 1) * 0.1).clamp(0, 1)
    with torch.no_grad():
        kl = [
            trades_loss(model(x), model(a), y).item() - trades_loss(model(x), model(x), y).item() for a in (adv, noise)
        ]
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert kl[0] > 2 * kl[1] > 0


# ------------------------------------------------------------------------------ adversarial training
@pytest.mark.parametrize(
    "defense,attack",
    [
        ("at", "pgd"),
        ("madry", "pgd"),
        ("alp", "pgd"),
        ("alp_mixed", "pgd"),
        ("trades", "pgd"),
        ("at", "fgsm"),
        ("trades", "fgsm"),
    ],
)
def test_adversarial_training_runs_with_each_defense(tmp_path, defense, attack):
    result = make_trainer(config(tmp_path, {**ADV, "defense": defense, "adversarial": attack}, epochs=1)).fit()
    row = result.metrics[-1]
    assert 0 <= row["adv_acc"] <= 1 and 0 <= row["val_adv_acc"] <= 1
    assert math.isfinite(row["loss"]) and ("acc" in row) == (defense != "madry")


@pytest.mark.parametrize("defense", ["at", "trades"])
def test_adversarial_training_attacks_under_the_runs_amp(tmp_path, defense):
    trainer = make_trainer(config(tmp_path, {**ADV, "defense": defense}, epochs=1, amp="bf16"))
    dtypes = set()  # of the attacks' conv outputs: the forwards in eval mode with grad (training's: train mode)

    def record(mod, inp, out):
        if isinstance(mod, nn.Conv2d) and not mod.training and torch.is_grad_enabled():
            dtypes.add(out.dtype)

    hook = nn.modules.module.register_module_forward_hook(record)  # every module's forward
    try:
        row = trainer.fit().metrics[-1]
    finally:
        hook.remove()
    assert trainer.attack.amp == "bf16" and dtypes == {torch.bfloat16}
    assert math.isfinite(row["loss"]) and 0 <= row["val_adv_acc"] <= 1


@pytest.mark.parametrize("defense", ["at", "madry", "alp", "alp_mixed", "trades"])
@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
def test_training_attacks_take_every_step_and_the_held_out_one_stops_early(defense, attack):
    # The papers' training attacks run every step for every sample (the examples of highest loss); the
    # held-out robust accuracy counts a sample as fooled once any step fooled it (early stop), under PGD
    # on the cross-entropy for TRADES as its paper reports.
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    at = AdversarialTraining(defense, attack, eps=0.1, steps=4)
    train, held_out = at.make_attack(model), at.make_attack(model, evaluation=True)
    assert not train.early_stop and held_out.early_stop
    expected = (
        "TradesPGD" if defense == "trades" else "FGSM" if attack == "fgsm" else "PGD",
        "FGSM" if attack == "fgsm" else "PGD",
    )
    assert (type(train).__name__, type(held_out).__name__) == expected
    if expected[0] != "FGSM":
        assert train.random_start  # Madry et al.'s random start (TRADES': a small random start)
    assert held_out.eps == train.eps == 0.1


def test_held_out_robust_accuracy_is_the_early_stopped_attacks(tmp_path, monkeypatch):
    trainer = make_trainer(config(tmp_path, {"adversarial": "pgd", "eps": 0.3, "adv_steps": 3}, epochs=1))
    trainer.fit()
    attack = trainer.defense.make_attack(trainer.model, seed=trainer.config.seed, evaluation=True)
    robust = n = 0
    with trainer.evaluating(trainer.model):
        for x, y in trainer.held_out_batches():
            robust += int((trainer.model(attack(x, y)).argmax(1) == y).sum())
            n += len(y)
    assert trainer.evaluate()["val_adv_acc"] == robust / n


def test_madry_at_eps_0_is_standard_training(tmp_path):
    """x_adv = x at eps 0: the adversarial step is the standard step, bit for bit (the attack runs in eval
    mode and changes neither weights nor BatchNorm statistics)."""
    standard = make_trainer(config(tmp_path / "a"))
    standard.fit()
    madry = make_trainer(config(tmp_path / "b", {"adversarial": "pgd", "defense": "madry", "eps": 0.0, "adv_steps": 2}))
    madry.fit()
    assert_same_weights(standard, madry)


def test_adversarial_training_resumes_exactly_after_a_crash(tmp_path, crash_and_resume):
    straight, resumed = crash_and_resume(lambda out: config(out, ADV, epochs=2), tmp_path)
    assert_same_weights(straight, resumed)
    rows = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in "ab"]
    for ra, rb in zip(*rows, strict=True):
        assert {k: v for k, v in ra.items() if k != "time"} == {k: v for k, v in rb.items() if k != "time"}


def train_recording_radius(out, options, monkeypatch, **kw):
    """Trains a classifier; returns it and [(epoch, batch, attack eps, attack alpha)] of each step."""
    trainer = make_trainer(config(out, options, **kw))
    step, seen = trainer.train_step, []

    def recording(batch):
        losses = step(batch)
        seen.append((trainer.epoch, trainer.batch, trainer.attack.eps, trainer.attack.alpha))
        return losses

    monkeypatch.setattr(trainer, "train_step", recording)
    trainer.fit()
    return trainer, seen


@pytest.mark.parametrize("alpha", [None, 0.04])
def test_eps_warmup_ramps_the_radius_and_step_linearly(tmp_path, monkeypatch, alpha):
    """48 images, batch 16: 3 steps an epoch; the step ending t = epoch + (batch + 1) / 3 epochs attacks
    with s * eps, s * alpha, s = min(1, t / 1.5); alpha None: 2.5 * eps / adv_steps."""
    options = {**ADV, "eps": 0.3, "adv_alpha": alpha, "eps_warmup": 1.5}
    _, seen = train_recording_radius(tmp_path, options, monkeypatch, epochs=3)
    full_alpha = 2.5 * 0.3 / 2 if alpha is None else alpha
    assert [(e, b) for e, b, _, _ in seen] == [(e, b) for e in range(3) for b in range(3)]
    for epoch, batch, eps, step in seen:
        s = min(1.0, (epoch + (batch + 1) / 3) / 1.5)
        assert eps == pytest.approx(0.3 * s, rel=1e-12) and step == pytest.approx(full_alpha * s, rel=1e-12)
    assert seen[0][2] == pytest.approx(0.3 / 4.5) and seen[2][2] == pytest.approx(0.2)
    assert [eps for _, _, eps, _ in seen[4:]] == [0.3] * 5  # full radius from t = 1.5 on


def test_eps_warmup_0_attacks_with_the_full_radius_bit_for_bit(tmp_path, monkeypatch):
    """Without warm-up every step's attack has exactly the eps and alpha that PGD computes (the training
    is then the one before the option existed); eps_warmup=0 and leaving it out are the same run."""
    warmup_0, seen = train_recording_radius(tmp_path / "a", {**ADV, "eps_warmup": 0}, monkeypatch)
    full = PGD(torch.nn.Identity(), 0.1, None, 2)
    assert {(eps, alpha) for _, _, eps, alpha in seen} == {(full.eps, full.alpha)}
    default = make_trainer(config(tmp_path / "b", ADV))
    default.fit()
    assert_same_weights(warmup_0, default)
    assert AdversarialTraining(eps_warmup=0).warmup_scale(0.0) == 1.0
    assert AdversarialTraining(eps_warmup=4).warmup_scale(1.0) == 0.25


def test_eps_warmup_resumes_exactly_after_a_mid_epoch_stop(tmp_path, monkeypatch):
    """Stopped (as by Ctrl-C) after the first step of the second epoch, inside the warm-up, then resumed:
    the radius of each step is a function of (epoch, batch), so the run equals the uninterrupted one."""
    options = {**ADV, "eps": 0.3, "eps_warmup": 1.5}
    straight = make_trainer(config(tmp_path / "a", options))
    straight.fit()
    stopped = make_trainer(config(tmp_path / "b", options))
    step = stopped.train_step

    def step_then_stop(batch):
        losses = step(batch)
        stopped._stop = stopped.epoch == 1 and stopped.batch == 0
        return losses

    monkeypatch.setattr(stopped, "train_step", step_then_stop)
    assert stopped.fit().stopped
    ckpt = load_checkpoint(tmp_path / "b" / "last.pt")
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 1)
    resumed = make_trainer(config(tmp_path / "b", options))
    resumed.fit(resume=True)
    assert_same_weights(straight, resumed)


def test_bad_adversarial_options_name_the_option(tmp_path):
    for options, message in [
        ({**ADV, "eps": -0.1}, "option eps must be finite and >= 0"),
        ({**ADV, "defense": "nope"}, "option defense must be one of at, madry"),
        ({**ADV, "adversarial": "square"}, "option adversarial must be one of pgd, fgsm"),
        ({**ADV, "adv_steps": 0}, "option adv_steps must be an int >= 1"),
        ({**ADV, "adv_lambda": -1.0}, "option adv_lambda must be finite and >= 0"),
        ({**ADV, "eps_warmup": -1.0}, "option eps_warmup must be finite and >= 0"),
        ({**ADV, "eps_warmup": math.inf}, "option eps_warmup must be finite and >= 0"),
        ({**ADV, "eps_warmup": math.nan}, "option eps_warmup must be finite and >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            make_trainer(config(tmp_path, options)).fit()
    with pytest.raises(ValueError, match="option eps_warmup must be a number \\(default 0.0\\), got 'ten'"):
        make_trainer(config(tmp_path, {**ADV, "eps_warmup": "ten"})).fit()
    with pytest.raises(ValueError, match="defense must be one of"):
        AdversarialTraining("nope")


def test_cli_adversarial_flags_set_the_classifier_options(tmp_path, capsys):
    out = tmp_path / "at"
    base = [
        "train",
        "classifier",
        "--data",
        "tiny",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--no-progress",
        "--sample-every",
        "0",
        "--device",
        "cpu",
    ]
    assert (
        cli.main(
            [
                *base,
                "--adversarial",
                "pgd",
                "--defense",
                "trades",
                "--eps",
                "0.1",
                "--adv-steps",
                "2",
                "--adv-alpha",
                "0.05",
                "--adv-lambda",
                "3",
                "--eps-warmup",
                "0.5",
            ]
        )
        == 0
    )
    options = json.loads((out / "config.json").read_text())["options"]
    flags = ("adversarial", "defense", "eps", "adv_steps", "adv_alpha", "adv_lambda", "eps_warmup")
    assert {k: options[k] for k in flags} == {
        "adversarial": "pgd",
        "defense": "trades",
        "eps": 0.1,
        "adv_steps": 2,
        "adv_alpha": 0.05,
        "adv_lambda": 3.0,
        "eps_warmup": 0.5,
    }
    assert "val_adv_acc" in (out / "metrics.csv").read_text()
    assert cli.main([*base, "--eps", "0.1"]) == 2
    assert "--eps sets up adversarial training: give --adversarial pgd" in capsys.readouterr().err
    assert cli.main([*base, "--adversarial", "pgd", "--eps-warmup", "-1"]) == 2
    assert "option eps_warmup must be finite and >= 0" in capsys.readouterr().err
    assert cli.main(["train", "vae", "--data", "tiny", "--adversarial", "pgd"]) == 2
    assert "--adversarial is an option of the classifier trainer only" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- detection
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LeNet trained on the 48 tiny digits (module scope: trained once)."""
    torch.set_num_threads(1)
    with registered(tiny=tiny):
        trainer = make_trainer(config(tmp_path_factory.mktemp("clf"), epochs=15, lr=3e-3))
        trainer.fit()
    model = trainer.model.eval()
    train, val = tiny("train"), tiny("val")
    return model, (train.images, train.labels), (val.images, val.labels)


def test_detector_separates_clean_from_pgd_and_the_adaptive_attack_lowers_its_logits(trained):
    model, (x, y), (xv, yv) = trained
    pgd = PGD(model, eps=0.2, steps=10, early_stop=False, seed=0)
    detector = fit_detector(model, "classifier.3", x, pgd(x, y), hidden=16, epochs=200)
    assert detection_auc(detector, xv, pgd(xv, yv)) > 0.75
    assert list(detector.state_dict()) == [
        "mean",
        "std",
        "head.0.weight",
        "head.0.bias",
        "head.2.weight",
        "head.2.bias",
    ]
    adaptive = AdaptivePGD(model, detector, eps=0.2, steps=10, c=10.0, seed=0)
    adv_plain, adv_evasive = pgd(xv, yv), adaptive(xv, yv)
    with torch.no_grad():
        plain, evasive = detector(adv_plain), detector(adv_evasive)
        assert evasive.mean() < plain.mean() - 1.0
        assert (model(adv_evasive).argmax(1) != yv).any()  # still attacks the classifier


def test_detection_report_and_errors(trained):
    model, train, test = trained
    report = detection_report(model, "classifier.1", train, test, 0.2, steps=3, c=(1.0,), hidden=0)
    assert [r.attack for r in report.rows] == [
        "FGSM",
        "PGD-3",
        "adaptive PGD-3 softplus c=1",
        "adaptive PGD-3 logit c=1",
    ]
    assert report.rows[1].fooled > 0.5 and report.rows[1].auc > 0.5
    assert "ROC-AUC" in report.table() and "classifier.1" in report.table()
    with pytest.raises(
        ValueError, match=r"layer 'classifier.9' is not a layer of the classifier; its layers: features"
    ):
        find_layer(model, "classifier.9")
    detector = ActivationDetector(model, "classifier.3", torch.zeros(84), torch.ones(84), hidden=0)
    with pytest.raises(ValueError, match="detector must be an ActivationDetector on this model"):
        AdaptivePGD(torch.nn.Linear(2, 2), detector)
    with pytest.raises(ValueError, match="detector_loss must be one of softplus, logit"):
        AdaptivePGD(model, detector, detector_loss="hinge")
