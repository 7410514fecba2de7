"""deepfast.train: every trainer learns a tiny fixed set, resumes exactly (after an epoch and after
Ctrl-C mid-epoch), stops on divergence keeping the last good checkpoint; the command line."""

import copy
import dataclasses
import os
import signal

import pytest
import torch

from conftest import registered, tiny_digits
from deepfast import cli
from deepfast.augment import colour_jitter
from deepfast.nn import recompute_batchnorm
from deepfast.train import TRAINERS, TrainConfig, TrainingDiverged, load_checkpoint, load_trainer, make_trainer
from deepfast.train.dcgan import EMA_STAT_BATCH, top_scores

# Small models so that each run takes a second or two on two CPU cores.
SMALL = {
    "ae": {"latent_dim": 8, "width": 8},
    "unet": {"width": 4, "depth": 2},
    "vae": {"latent_dim": 4, "width": 8},
    "dcgan": {"nz": 8, "ngf": 8, "ndf": 8},
    "cdcgan": {"nz": 8, "ngf": 8, "ndf": 8, "ema": 0.9, "augment": "translation,cutout"},
    "cyclegan": {"ngf": 4, "ndf": 4, "n_blocks": 1, "pool_size": 3},
    "classifier": {},
}


class Pairs(torch.utils.data.Dataset):
    """(digit, its negative): two domains with a known translation."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i][0]
        return x, -x


def tiny_pairs(split="train", size=32, value_range=(-1.0, 1.0)):
    return Pairs(tiny_digits(split, size, value_range, n=8))


@pytest.fixture(autouse=True)
def tiny_data():
    cannot_resize = lambda split="train", value_range=(0.0, 1.0): tiny_digits(split, 32, value_range)  # noqa: E731
    with registered(tiny=tiny_digits, tiny_pairs=tiny_pairs, tiny32=cannot_resize):
        yield


pytestmark = pytest.mark.usefixtures("one_thread")


def config(model, out, **kw):
    fields = dict(
        model=model,
        data="tiny_pairs" if model == "cyclegan" else "tiny",
        out=str(out),
        batch_size=2 if model == "cyclegan" else 8,
        epochs=2,
        progress=False,
        sample_every=1,
        options=dict(SMALL[model]),
        device="cpu",
    )
    fields.update(kw)
    return TrainConfig(**fields)


def states(trainer):
    return {k: {n: t.clone() for n, t in m.state_dict().items()} for k, m in trainer.models.items()}


def assert_same_state(a, b, exact=True):
    assert a.keys() == b.keys()
    for k in a:
        for name in a[k]:
            if exact:
                assert torch.equal(a[k][name], b[k][name]), f"{k}.{name} differs"
            else:
                torch.testing.assert_close(a[k][name], b[k][name], rtol=1e-4, atol=1e-5, msg=f"{k}.{name}")


# (trainer, loss that must fall, factor it must fall by, epochs) on a fixed set of 8 (cyclegan) or 32 images.
LEARNS = [
    ("ae", "loss", 0.7, 30),
    ("unet", "loss", 0.6, 25),
    ("vae", "recon", 0.7, 30),
    ("cyclegan", "cycle", 0.5, 15),
    ("classifier", "loss", 0.1, 25),
]


@pytest.mark.parametrize("model,key,factor,epochs", LEARNS, ids=[m for m, *_ in LEARNS])
def test_trainer_fits_a_tiny_set(tmp_path, model, key, factor, epochs):
    result = make_trainer(config(model, tmp_path, epochs=epochs, sample_every=0, lr=3e-3)).fit()
    first, last = result.metrics[0][key], result.metrics[-1][key]
    assert last < factor * first, f"{key}: {first} -> {last}"


def test_dcgan_learns_the_data_mean(tmp_path):
    """The generator's mean image moves to the data's, and D tells real from fake: both steps work."""
    trainer = make_trainer(config("dcgan", tmp_path, epochs=60, sample_every=0, lr=1e-3))
    data_mean = torch.stack([x for x, _ in tiny_digits(value_range=(-1, 1))]).mean(0)

    def distance():
        with trainer.evaluating(trainer.g):
            return (trainer.g(torch.randn(64, 8)).mean(0) - data_mean).abs().mean().item()

    result = trainer.fit()
    assert result.metrics[-1]["d_real"] > result.metrics[-1]["d_fake"]
    assert distance() < 0.7 * data_mean.abs().mean().item()  # the untrained G gives ~0 everywhere


@pytest.mark.parametrize("model", ["vae", "dcgan", "cdcgan", "cyclegan", "classifier"])
def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, model, crash_and_resume):
    straight, resumed = crash_and_resume(lambda out: config(model, out, epochs=3), tmp_path)
    assert_same_state(states(straight), states(resumed))
    for key in straight.optimizers:
        assert straight.optimizers[key].param_groups[0]["lr"] == resumed.optimizers[key].param_groups[0]["lr"]
    rows_a, rows_b = load_rows(tmp_path / "a"), load_rows(tmp_path / "b")
    assert [r["epoch"] for r in rows_b] == [1, 2, 3]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert {k: v for k, v in ra.items() if k != "time"} == {k: v for k, v in rb.items() if k != "time"}


def load_rows(folder):
    import json

    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("model", ["vae", "cyclegan"])
def test_ctrl_c_mid_epoch_saves_and_resume_continues_exactly(tmp_path, model, monkeypatch):
    straight = make_trainer(config(model, tmp_path / "a", epochs=2))
    straight.fit()
    interrupted = make_trainer(config(model, tmp_path / "b", epochs=2))
    step = interrupted.train_step
    calls = []

    def step_then_ctrl_c(batch):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return step(batch)

    monkeypatch.setattr(interrupted, "train_step", step_then_ctrl_c)
    handler = signal.getsignal(signal.SIGINT)  # SIG_IGN where the tests run in the background
    result = interrupted.fit()
    assert result.stopped and result.epochs_done == 0
    ckpt = load_checkpoint(tmp_path / "b" / "last.pt")
    assert (ckpt["epoch"], ckpt["batch"]) == (0, 3)  # 4 batches an epoch: stopped after the third
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    resumed = make_trainer(config(model, tmp_path / "b", epochs=2))
    resumed.fit(resume=True)
    assert_same_state(states(straight), states(resumed))


DDP_SCRIPT = """
import sys, torch, torch.distributed as dist
from deepfast.train import TrainConfig, make_trainer
out = sys.argv[1]
dist.init_process_group("gloo")  # the trainers use it (and leave it open) for both runs
for model, kw in (("classifier", {"sync_bn": True}), ("dcgan", {"options": {"nz": 8, "ngf": 8, "ndf": 8}})):
    trainer = make_trainer(TrainConfig(model=model, data="digits", epochs=1, max_batches=3, batch_size=32,
                                       out=f"{out}/{model}", progress=False, device="cpu", **kw))
    trainer.fit()
    states = {k: m.state_dict() for k, m in trainer.models.items()}
    torch.save(states, f"{out}/{model}/rank{dist.get_rank()}.pt")
dist.destroy_process_group()
"""


def test_ddp_two_processes_match_one_process_with_the_global_batch(tmp_path):
    """torchrun, 2 CPU processes (gloo): weights identical across ranks; with --sync-bn the classifier
    matches a single process that trains on the same global batches."""
    import subprocess
    import sys

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for model in ("classifier", "dcgan"):
        rank0, rank1 = (torch.load(tmp_path / model / f"rank{r}.pt") for r in (0, 1))
        if model == "dcgan":  # without sync_bn each rank's BN statistics are its own (DDP re-broadcasts rank 0's)
            rank0, rank1 = (
                {k: {n: t for n, t in sd.items() if "running" not in n} for k, sd in r.items()} for r in (rank0, rank1)
            )
        assert_same_state(rank0, rank1)
    single = make_trainer(
        TrainConfig(
            model="classifier",
            data="digits",
            epochs=1,
            max_batches=3,
            batch_size=32,
            out=str(tmp_path / "single"),
            progress=False,
            device="cpu",
            sync_bn=True,
        )
    )
    single.fit()
    assert_same_state(states(single), torch.load(tmp_path / "classifier" / "rank0.pt"), exact=False)


def test_divergence_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    trainer = make_trainer(config("vae", tmp_path, epochs=3))
    step = trainer.train_step

    def nan_in_epoch_2(batch):
        losses = step(batch)
        return {**losses, "loss": losses["loss"] * float("nan")} if trainer.epoch == 1 else losses

    monkeypatch.setattr(trainer, "train_step", nan_in_epoch_2)
    with pytest.raises(TrainingDiverged, match=r"vae diverged at epoch 2, batch 1 \(loss=nan.*last good checkpoint"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert [row["epoch"] for row in load_rows(tmp_path)] == [1]


@pytest.mark.parametrize(
    "kw",
    [
        {"amp": "bf16", "channels_last": True},
        {"amp": "fp16"},
        {"compile": True},
        {"impl": "reference"},
        {"backend": "torch"},
    ],
    ids=["bf16-channels_last", "fp16", "compile", "reference", "torch-backend"],
)
def test_training_options_run_and_learn(tmp_path, kw):
    result = make_trainer(config("classifier", tmp_path, epochs=6, lr=3e-3, sample_every=0, **kw)).fit()
    assert result.metrics[-1]["loss"] < 0.5 * result.metrics[0]["loss"]


def test_bad_settings_name_the_setting(tmp_path):
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        make_trainer(config("vae", tmp_path, epochs=0))
    with pytest.raises(ValueError, match="amp must be one of"):
        make_trainer(config("vae", tmp_path, amp="fp8"))
    with pytest.raises(ValueError, match="unknown option.*betaa.*known: beta"):
        make_trainer(config("vae", tmp_path, options={"betaa": 2.0}))
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        make_trainer(config("vae", tmp_path, data="nope")).fit()
    with pytest.raises(ValueError, match="fewer than batch_size"):
        make_trainer(config("vae", tmp_path, batch_size=64)).fit()
    with pytest.raises(ValueError, match="image_size must be one of 32, 64, got 16"):
        make_trainer(config("vae", tmp_path, image_size=16)).fit()
    with pytest.raises(ValueError, match=r"gives \(32, 32\) images but image_size is 64; pass --image-size 32"):
        make_trainer(config("vae", tmp_path, data="tiny32", image_size=64)).fit()
    with pytest.raises(ValueError, match="classifier needs labelled data"):
        make_trainer(config("classifier", tmp_path, data="ihc")).fit()
    with pytest.raises(FileNotFoundError, match="last.pt does not exist"):
        make_trainer(config("vae", tmp_path / "none")).fit(resume=True)
    make_trainer(config("vae", tmp_path / "run", epochs=1)).fit()
    with pytest.raises(ValueError, match=r"cannot resume.*batch_size: 8 there, 4 here"):
        make_trainer(config("vae", tmp_path / "run", batch_size=4)).fit(resume=True)


def test_cli_train_resume_and_sample(tmp_path, capsys):
    out = tmp_path / "vae"
    args = [
        "train",
        "vae",
        "--data",
        "tiny",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--no-progress",
        "-o",
        "latent_dim=4",
        "-o",
        "width=8",
        "--device",
        "cpu",
    ]
    assert cli.main(args) == 0
    for written in ("last.pt", "metrics.csv", "metrics.jsonl", "config.json", "samples/epoch_001.png"):
        assert (out / written).exists()
    # --resume takes the saved settings (the options included); --epochs sets the new total
    assert cli.main(["train", "vae", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert [row["epoch"] for row in load_rows(out)] == [1, 2]
    assert cli.main(["sample", "--ckpt", str(out / "last.pt"), "--n", "9", "--out", str(tmp_path / "s.png")]) == 0
    from PIL import Image

    with Image.open(tmp_path / "s.png") as img:  # 3 x 3 digits of 32 px, scaled 2x, 2 px padding
        assert img.size == (3 * 66 + 2, 3 * 66 + 2)
    assert "wrote" in capsys.readouterr().out


def test_cli_errors_are_one_line_naming_the_problem(tmp_path, capsys):
    assert cli.main(["train", "vae", "--out", str(tmp_path / "x"), "--resume"]) == 2
    assert "last.pt does not exist" in capsys.readouterr().err
    assert cli.main(["train", "vae", "--data", "tiny", "--epochs", "0"]) == 2
    assert "epochs must be a positive int" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "vae", "-o", "beta"])
    assert "options are KEY=VALUE" in capsys.readouterr().err
    assert cli.main(["sample", "--ckpt", str(tmp_path / "missing.pt")]) == 2


def test_every_trainer_has_a_cli_choice_and_documented_defaults():
    parser = cli.build_parser()
    for name, cls in TRAINERS.items():
        args = parser.parse_args(["train", name])
        assert args.model == name and cls.__doc__
        assert {"data", "epochs", "batch_size", "lr", "image_size"} <= set(cls.defaults)


def test_dcgan_ema_generator_is_the_running_average(tmp_path):
    """With ema = d, after each step g_ema = d g_ema + (1 - d) g (buffers copied); it is what samples."""
    trainer = make_trainer(config("dcgan", tmp_path, options={**SMALL["dcgan"], "ema": 0.9}))
    trainer.setup(1)
    batch = torch.rand(8, 1, 32, 32) * 2 - 1
    before = [p.clone() for p in trainer.g_ema.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.g.parameters()))
    trainer.train_step(batch)
    for old, ema, new in zip(before, trainer.g_ema.parameters(), trainer.g.parameters()):
        torch.testing.assert_close(ema, 0.9 * old + 0.1 * new)
    assert not any(p.requires_grad for p in trainer.g_ema.parameters())
    assert trainer.generator is trainer.g_ema
    for b_ema, b in zip(trainer.g_ema.buffers(), trainer.g.buffers()):
        assert torch.equal(b_ema, b)
    with pytest.raises(ValueError, match="ema"):
        make_trainer(config("dcgan", tmp_path, options={"ema": 1.0})).setup(1)


@pytest.mark.parametrize("model", ["dcgan", "cdcgan"])
def test_ema_generator_batchnorm_statistics_are_its_own(tmp_path, model):
    """After each epoch the EMA generator's BatchNorm statistics are recomputed for its weights from
    fresh z (and labels), seeded by (seed, epoch): not G's, and the run's random stream untouched."""
    trainer = make_trainer(config(model, tmp_path, epochs=1, options={**SMALL[model], "ema": 0.9}))
    trainer.fit()
    expected = copy.deepcopy(trainer.g_ema)
    gen = torch.Generator().manual_seed(trainer.config.seed * 1000)
    nz, sizes = trainer.options.nz, torch.arange(len(trainer.train_data)).split(EMA_STAT_BATCH)
    batches = [(torch.randn(len(n), nz, generator=gen), *trainer.random_conditions(len(n), gen)) for n in sizes]
    recompute_batchnorm(expected, batches)
    for name, b in trainer.g_ema.named_buffers():
        torch.testing.assert_close(b, dict(expected.named_buffers())[name])
        if name.endswith("running_mean"):
            assert not torch.allclose(b, dict(trainer.g.named_buffers())[name])


def test_topk_takes_the_generator_cost_over_the_best_scored_fakes(tmp_path):
    scores = torch.tensor([0.3, -2.0, 1.5, 0.7, -0.1, 4.0, 0.2], requires_grad=True)
    top = top_scores(scores, 0.4)  # round(2.8) = 3
    assert top.tolist() == pytest.approx([4.0, 1.5, 0.7])
    (grad,) = torch.autograd.grad(top.sum() * 0.5, scores)
    assert grad.tolist() == [0.0, 0.0, 0.5, 0.5, 0.0, 0.5, 0.0]
    assert top_scores(scores, 1.0) is scores and top_scores(scores, 0.01).tolist() == [4.0]
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="topk"):
            make_trainer(config("dcgan", tmp_path, options={"topk": bad})).setup(1)


def test_cdcgan_samples_one_class_per_row_and_needs_labels(tmp_path):
    trainer = make_trainer(config("cdcgan", tmp_path, epochs=1))
    trainer.fit()
    assert trainer.samples().shape == (100, 1, 32, 32)
    assert trainer.sample_labels.tolist() == [k for k in range(10) for _ in range(10)]
    loaded = load_trainer(str(tmp_path / "last.pt"))
    assert_same_state(states(trainer), states(loaded))
    torch.testing.assert_close(loaded.samples(), trainer.samples())
    with pytest.raises(ValueError, match="labelled"):
        trainer.train_step(torch.rand(8, 1, 32, 32))


def test_cyclegan_saliency_thresholds_per_domain_and_semantic_consistency(tmp_path):
    opts = {
        **SMALL["cyclegan"],
        "saliency": 1.0,
        "saliency_tau": 0.3,
        "saliency_tau_b": 0.6,
        "upsample": "resize",
        "skip": True,
    }
    trainer = make_trainer(config("cyclegan", tmp_path / "s", options=opts))
    trainer.setup(1)
    a_to_b, b_to_a = trainer.saliency
    assert (a_to_b.tau_real, a_to_b.tau_translated, b_to_a.tau_real, b_to_a.tau_translated) == (0.3, 0.6, 0.6, 0.3)
    x = tiny_pairs()[0][0][None]
    assert "saliency" in trainer.train_step((x.repeat(2, 1, 1, 1), -x.repeat(2, 1, 1, 1)))
    # CyCADA's term: CE of the frozen classifier on G_A(a) against its own labels of a
    make_trainer(config("classifier", tmp_path / "clf", epochs=1)).fit()
    with pytest.raises(ValueError, match="semantic_classifier"):
        make_trainer(config("cyclegan", tmp_path / "c0", options={**SMALL["cyclegan"], "semantic": 1.0})).setup(1)
    opts = {**SMALL["cyclegan"], "semantic": 2.0, "semantic_classifier": str(tmp_path / "clf" / "last.pt")}
    result = make_trainer(config("cyclegan", tmp_path / "c", epochs=1, image_size=32, options=opts)).fit()
    assert result.metrics[-1]["semantic"] > 0
    trainer = load_trainer(str(tmp_path / "c" / "last.pt"))
    clf = trainer.semantic
    assert not any(p.requires_grad for p in clf.parameters()) and not clf.training
    a = torch.stack([tiny_pairs()[i][0] for i in range(4)])
    fake = trainer.g_a(a)
    loss = trainer.semantic_loss(a, fake)
    expected = 2.0 * torch.nn.functional.cross_entropy(clf((fake + 1) / 2), clf((a + 1) / 2).argmax(1))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is not None for p in trainer.g_a.parameters())


def test_cyclegan_pixel_generators_train_and_reload(tmp_path):
    """generator="pixel": both generators are PixelGenerators (ngf wide), trained (finite losses, weights
    moved) and saved: the checkpoint gives them back; a bad choice is refused."""
    from deepfast.models import PixelGenerator

    opts = {**SMALL["cyclegan"], "generator": "pixel", "ngf": 8}
    trainer = make_trainer(config("cyclegan", tmp_path / "p", sample_every=0, options=opts))
    trainer.setup(1)
    start = states(trainer)
    result = trainer.fit()
    assert all(torch.isfinite(torch.tensor(v)) for row in result.metrics for v in row.values())
    loaded = load_trainer(str(tmp_path / "p" / "last.pt"))
    assert isinstance(loaded.g_a, PixelGenerator) and isinstance(loaded.g_b, PixelGenerator)
    assert_same_state(states(loaded), states(trainer))
    assert not torch.equal(start["g_a"]["model.0.conv.weight"], states(trainer)["g_a"]["model.0.conv.weight"])
    with pytest.raises(ValueError, match="option generator"):
        make_trainer(config("cyclegan", tmp_path / "bad", options={**SMALL["cyclegan"], "generator": "unet"})).setup(1)


def test_load_trainer_gives_the_trained_models(tmp_path):
    trainer = make_trainer(config("dcgan", tmp_path, epochs=1))
    trainer.fit()
    loaded = load_trainer(str(tmp_path / "last.pt"))
    assert_same_state(states(trainer), states(loaded))
    assert not loaded.g.training


def test_evaluating_restores_each_submodules_own_mode():
    """The trainers' evaluating(*models) restores every submodule's training flag (a frozen BatchNorm inside
    a training model stays in eval), not one mode per model, and turns grad off inside."""
    from deepfast.train.trainer import Trainer

    a, b = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)).train(), torch.nn.Linear(2, 2).eval()
    a[1].eval()
    with Trainer.evaluating(a, b):
        assert not any(m.training for m in [*a.modules(), b]) and not torch.is_grad_enabled()
    assert [m.training for m in a.modules()] == [True, True, False] and not b.training


def test_classifier_colour_jitter_jitters_the_training_batches_and_still_learns(tmp_path, monkeypatch):
    import deepfast.train.classifier as classifier

    calls = []

    def recording(x, strength, value_range):
        y = colour_jitter(x, strength, value_range)
        calls.append((x, y, strength, value_range))
        return y

    monkeypatch.setattr(classifier, "colour_jitter", recording)
    result = make_trainer(
        config("classifier", tmp_path, epochs=6, lr=3e-3, sample_every=0, options={"colour_jitter": 0.5})
    ).fit()
    assert result.metrics[-1]["loss"] < 0.5 * result.metrics[0]["loss"]
    x, y, strength, value_range = calls[0]
    assert strength == 0.5 and value_range == (0.0, 1.0) and (y - x).abs().max() > 0.05
    calls.clear()
    make_trainer(config("classifier", tmp_path / "off", epochs=1, sample_every=0)).fit()
    assert calls == []
    with pytest.raises(ValueError, match="option colour_jitter must be in"):
        make_trainer(config("classifier", tmp_path / "bad", options={"colour_jitter": 2.0})).fit()


def test_options_are_a_typed_dataclass_saved_as_a_dict():
    from deepfast.train.cyclegan import CycleGANOptions

    trainer = make_trainer(TrainConfig(model="cyclegan", options={"ngf": 8, "saliency_tau_b": 0.3}, progress=False))
    assert trainer.options == CycleGANOptions(ngf=8, saliency_tau_b=0.3)
    assert trainer.config.options == dataclasses.asdict(CycleGANOptions(ngf=8, saliency_tau_b=0.3))
    for options, message in [
        ({"ngf": 1.5}, "option ngf must be an int \\(default 32\\), got 1.5"),
        ({"skip": 1}, "option skip must be True or False"),
        ({"decay_epochs": "x"}, "option decay_epochs must be an int or None"),
        ({"loss": 3}, "option loss must be a string"),
        ({"nope": 1}, "unknown option\\(s\\) for cyclegan: nope \\(known: ngf, ndf"),
    ]:
        with pytest.raises(ValueError, match=message):
            make_trainer(TrainConfig(model="cyclegan", options=options, progress=False))
