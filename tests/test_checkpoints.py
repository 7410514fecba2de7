"""Checkpoints never execute code, and damaged ones are refused with a message naming the file.

A malicious checkpoint (a valid run's last.pt with an object whose unpickling writes a file, hidden in
it) goes through every command and function that loads one: none runs the payload, each refuses
the file naming --trust-checkpoint. The same file loaded with trusted=True does run it (the payload
is real). Format-1 checkpoints (NumPy RNG state) need the opt-in; bit flips, a missing key, another
architecture give a CheckpointError naming the file."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import registered, tiny_digits
from deepfast import cli
from deepfast.demo.runs import trained
from deepfast.train import TrainConfig, load_checkpoint, load_trainer, make_trainer, train
from deepfast.train.checkpoint import CheckpointError, atomic_save, digest

pytestmark = pytest.mark.usefixtures("one_thread", "tiny_dataset")

VAE = {"latent_dim": 4, "width": 8}


def run_config(model: str, out: Path, **kw) -> TrainConfig:
    fields = dict(
        model=model,
        data="tiny",
        out=str(out),
        batch_size=8,
        epochs=1,
        max_batches=2,
        progress=False,
        sample_every=0,
        device="cpu",
        options=dict(VAE) if model == "vae" else {"width": 8},
    )
    return TrainConfig(**{**fields, **kw})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished vae run and a finished classifier run: {model: path of last.pt}."""
    root = tmp_path_factory.mktemp("runs")
    with registered(tiny=tiny_digits):
        for model in ("vae", "classifier"):
            make_trainer(run_config(model, root / model)).fit()
    return {model: root / model / "last.pt" for model in ("vae", "classifier")}


class Payload:
    """Unpickling it runs ``exec``: it writes ``mark`` (what a malicious checkpoint could do instead)."""

    def __init__(self, mark: Path) -> None:
        self.mark = str(mark)

    def __reduce__(self):
        return exec, (f"open({self.mark!r}, 'w').write('the payload ran')",)


def plant(src: Path, dst: Path, mark: Path, format_1: bool = False) -> Path:
    """dst: the checkpoint src with a Payload hidden in its sums; with format_1, as an older deepfast wrote
    it (NumPy's RNG state as an array, no digest)."""
    ckpt = torch.load(src, weights_only=True)
    ckpt["sums"] = {**ckpt["sums"], "hidden": Payload(mark)}
    if format_1:
        ckpt.pop("digest")
        ckpt["format"] = 1
        for rank in ckpt["ranks"]:
            rank["rng"]["numpy"] = np.random.get_state()
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    return dst


def loaders(tmp_path: Path, runs: dict, capsys) -> dict:
    """name -> function(path of a malicious copy of the checkpoint it needs) that loads it the way that
    command or function does; each returns the error message it gave."""

    def refused(fn):
        with pytest.raises(CheckpointError) as err:
            fn()
        return str(err.value)

    def command(argv):
        assert cli.main(argv) == 2
        return capsys.readouterr().err

    def folder(path):  # a run folder holding the checkpoint as last.pt
        return str(path.parent)

    return {
        "load_checkpoint": ("vae", lambda p: refused(lambda: load_checkpoint(p))),
        "load_trainer": ("vae", lambda p: refused(lambda: load_trainer(str(p)))),
        "Trainer.fit(resume=True)": (
            "vae",
            lambda p: refused(lambda: make_trainer(run_config("vae", folder(p), epochs=2)).fit(resume=True)),
        ),
        "train(resume=True)": (
            "vae",
            lambda p: refused(lambda: train(run_config("vae", folder(p), epochs=2), resume=True)),
        ),
        "deepfast train --resume": (
            "vae",
            lambda p: command(["train", "vae", "--out", folder(p), "--resume", "--epochs", "2", "--no-progress"]),
        ),
        "deepfast sample": ("vae", lambda p: command(["sample", "--ckpt", str(p), "--out", str(tmp_path / "s.png")])),
        "deepfast attack": (
            "classifier",
            lambda p: command(
                ["attack", "--ckpt", str(p), "--n", "4", "--no-progress", "--out", str(tmp_path / "a.png")]
            ),
        ),
        "deepfast detect": (
            "classifier",
            lambda p: command(["detect", "--ckpt", str(p), "--n", "4", "--n-train", "4", "--steps", "1"]),
        ),
    }


@pytest.mark.parametrize("format_1", [False, True], ids=["hidden-in-format-2", "format-1"])
def test_no_loader_runs_a_malicious_checkpoint(tmp_path, runs, capsys, format_1):
    mark = tmp_path / "pwned"
    for i, (name, (model, load)) in enumerate(loaders(tmp_path, runs, capsys).items()):
        path = plant(runs[model], tmp_path / f"run{i}" / "last.pt", mark, format_1)
        message = load(path)
        assert not mark.exists(), f"{name} ran the payload"
        assert str(path) in message and "--trust-checkpoint" in message, f"{name}: {message}"
        assert "builtins.exec" in message, f"{name} does not name what the file holds: {message}"
    # the demo reuses finished runs: it refuses this one, says so and trains the run again
    out = tmp_path / "demo_run"
    plant(runs["vae"], out / "last.pt", mark, format_1)
    trainer = trained(
        out,
        progress=False,
        device="cpu",
        **{k: v for k, v in run_config("vae", out).to_dict().items() if k not in ("out", "progress", "device")},
    )
    assert not mark.exists(), "the demo ran the payload"
    assert "--trust-checkpoint" in capsys.readouterr().out
    assert load_checkpoint(out / "last.pt")["epoch"] == 1 and trainer.name == "vae"
    # the payload is real: the full unpickler (trusted=True) runs it
    trusted = plant(runs["vae"], tmp_path / "trusted" / "last.pt", mark, format_1)
    if format_1:
        load_checkpoint(trusted, trusted=True)
    else:  # the digest then refuses it: the payload unpickled to None, not what was digested
        with pytest.raises(CheckpointError, match="damaged"):
            load_checkpoint(trusted, trusted=True)
    assert mark.read_text() == "the payload ran"


def test_every_torch_load_in_deepfast_is_restricted():
    """Each torch.load call in the package passes weights_only=True, but the one trusted=True reaches."""
    unrestricted = []
    for file in sorted(Path(__file__).parents[1].joinpath("deepfast").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                flag = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    unrestricted.append(f"{file.name}:{node.lineno}")
    assert unrestricted == ["checkpoint.py:" + str(_trusted_line())]


def _trusted_line() -> int:
    """The line of load_checkpoint's weights_only=False call: the statement right after an
    ``if not trusted: raise CheckpointError(...)``."""
    tree = ast.parse(Path(__file__).parents[1].joinpath("deepfast/train/checkpoint.py").read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        for guard, statement in zip(body, body[1:]) if isinstance(body, list) else ():
            code = ast.unparse(statement) if isinstance(statement, (ast.Assign, ast.Expr)) else ""
            if "torch.load" in code and "weights_only=False" in code:
                assert ast.unparse(guard).startswith("if not trusted:\n    raise CheckpointError("), ast.unparse(guard)
                return statement.lineno
    raise AssertionError("checkpoint.py has no torch.load(..., weights_only=False)")


def test_format_2_loads_with_plain_torch_weights_only(runs):
    ckpt = torch.load(runs["vae"], weights_only=True)
    assert ckpt["format"] == 2 and ckpt["digest"] == digest({k: v for k, v in ckpt.items() if k != "digest"})
    assert isinstance(ckpt["ranks"][0]["rng"]["numpy"]["keys"], torch.Tensor)


def test_format_1_loads_and_resumes_with_trust(tmp_path, runs):
    """An older deepfast's checkpoint (no payload) resumes with trusted=True and is saved back in format 2."""
    out = tmp_path / "old"
    ckpt = torch.load(runs["vae"], weights_only=True)
    del ckpt["digest"]
    ckpt["format"] = 1
    for rank in ckpt["ranks"]:
        keys = rank["rng"]["numpy"]
        rank["rng"]["numpy"] = (
            "MT19937",
            keys["keys"].numpy().astype(np.uint32),
            keys["pos"],
            keys["has_gauss"],
            keys["cached_gaussian"],
        )
    out.mkdir()
    torch.save(ckpt, out / "last.pt")
    with pytest.raises(CheckpointError, match=r"numpy.*--trust-checkpoint"):
        load_checkpoint(out / "last.pt")
    assert load_checkpoint(out / "last.pt", trusted=True)["format"] == 1
    make_trainer(run_config("vae", out, epochs=2)).fit(resume=True, trusted=True)
    assert load_checkpoint(out / "last.pt")["format"] == 2  # no trust needed any more


def test_bit_flips_are_refused_or_harmless(tmp_path, runs):
    """Flip one random bit at a time: every copy is refused with a CheckpointError naming it, or (a bit of
    the zip's padding) loads to exactly the original values; a value changed behind a stale digest is refused."""
    original = runs["vae"].read_bytes()
    reference = digest(load_checkpoint(runs["vae"]))
    rng = random.Random(0)
    refused = 0
    for trial in range(60):
        data = bytearray(original)
        bit = rng.randrange(8 * len(data))
        data[bit // 8] ^= 1 << (bit % 8)
        path = tmp_path / f"flip{trial}.pt"
        path.write_bytes(bytes(data))
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as err:
            assert str(path) in str(err)
            refused += 1
        else:
            assert digest(ckpt) == reference, f"bit {bit} changed the checkpoint and was accepted"
    assert refused > 30
    ckpt = torch.load(runs["vae"], weights_only=True)
    weight = next(iter(ckpt["models"]["vae"].values()))
    weight.view(-1)[0] += 1e-3  # a changed weight, the old digest kept
    torch.save(ckpt, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match=r"edited.pt is damaged: its contents do not match the SHA-256 digest"):
        load_checkpoint(tmp_path / "edited.pt")


def resaved(src: Path, dst: Path, change) -> Path:
    """dst: the checkpoint src after ``change(ckpt)``, saved with a fresh digest (a well-formed file)."""
    ckpt = load_checkpoint(src)
    change(ckpt)
    atomic_save(ckpt, dst)
    return dst


def test_missing_keys_and_another_architecture_name_the_file(tmp_path, runs):
    path = resaved(runs["vae"], tmp_path / "nokey" / "last.pt", lambda c: c.pop("channels"))
    with pytest.raises(CheckpointError, match=r"nokey/last.pt is incomplete: it lacks 'channels'"):
        load_trainer(str(path))
    path = resaved(runs["vae"], tmp_path / "nomodel" / "last.pt", lambda c: c["models"].clear())
    with pytest.raises(CheckpointError, match=r"nomodel/last.pt is incomplete: it holds no state for model 'vae'"):
        load_trainer(str(path))
    wider = make_trainer(run_config("vae", tmp_path / "w", options={**VAE, "width": 16}))
    wider.setup(1)
    path = resaved(
        runs["vae"], tmp_path / "arch" / "last.pt", lambda c: c["models"].update(vae=wider.models["vae"].state_dict())
    )
    for load in (
        lambda: load_trainer(str(path)),
        lambda: make_trainer(run_config("vae", path.parent, epochs=2)).fit(resume=True),
    ):
        with pytest.raises(
            CheckpointError,
            match=r"arch/last.pt: the weights of model 'vae' do not fit the model its "
            r"settings build \(shapes differ: .* there, .* here",
        ):
            load()
    path = resaved(runs["vae"], tmp_path / "opt" / "last.pt", lambda c: c["optimizers"]["vae"]["param_groups"].clear())
    with pytest.raises(CheckpointError, match=r"opt/last.pt: cannot load the state of optimizer 'vae'"):
        make_trainer(run_config("vae", path.parent, epochs=2)).fit(resume=True)
    path = resaved(runs["vae"], tmp_path / "typed" / "last.pt", lambda c: c.update(epoch="1"))
    with pytest.raises(CheckpointError, match=r"typed/last.pt is not one deepfast wrote: epoch is a str, not a int"):
        load_checkpoint(path)
