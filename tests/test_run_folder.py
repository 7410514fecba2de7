"""Run folders: the lock (a second training refused naming the holder's pid, free again once it dies),
no new run over an old one without --overwrite, stale temporary files removed, resume settings that
are refused (another lr, fewer epochs than trained), a full disk (a real 1 MiB-scale tmpfs where
mounting works, and an injected ENOSPC), and the option-type and amp fixes."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepfast import cli
from deepfast.losses import VAELoss
from deepfast.train import TrainConfig, load_checkpoint, make_trainer
from deepfast.train.lock import RunFolderError

pytestmark = pytest.mark.usefixtures("one_thread", "tiny_dataset")
VAE = {"latent_dim": 4, "width": 8}


def vae(out: Path, **kw) -> TrainConfig:
    fields = dict(
        model="vae",
        data="tiny",
        out=str(out),
        batch_size=8,
        epochs=1,
        max_batches=2,
        progress=False,
        sample_every=1,
        samples=4,
        device="cpu",
        options=dict(VAE),
    )
    return TrainConfig(**{**fields, **kw})


def cli_args(out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "vae",
        "--data",
        "tiny",
        "--batch-size",
        "8",
        "--max-batches",
        "2",
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
        "-o",
        "latent_dim=4",
        "-o",
        "width=8",
        *extra,
    ]


HOLD_LOCK = """
import sys, time
from deepfast.train.lock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_training_into_a_locked_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            RunFolderError, match=rf"run folder {out} is in use by another training \(pid {holder.pid} on "
        ):
            make_trainer(vae(out)).fit()
        assert cli.main(cli_args(out)) == 2
        assert f"is in use by another training (pid {holder.pid}" in capsys.readouterr().err
        assert not (out / "last.pt").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    make_trainer(vae(out)).fit()  # the OS released the dead holder's lock
    assert load_checkpoint(out / "last.pt")["epoch"] == 1


def test_a_new_run_over_an_old_one_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(cli_args(out, "--epochs", "2")) == 0
    before = {name: (out / name).read_bytes() for name in ("last.pt", "metrics.jsonl", "config.json")}
    assert cli.main(cli_args(out, "--epochs", "1")) == 2
    err = capsys.readouterr().err
    assert f"run folder {out} holds a run already (last.pt, metrics.jsonl)" in err and "--overwrite" in err
    assert {name: (out / name).read_bytes() for name in before} == before  # nothing touched
    assert cli.main(cli_args(out, "--resume", "--overwrite")) == 2
    assert "give one of them" in capsys.readouterr().err
    (out / "notes.txt").write_text("mine")
    assert cli.main(cli_args(out, "--epochs", "1", "--overwrite")) == 0
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_001.png"]  # epoch 2's grid went with its run
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_stale_temporary_files_are_removed_at_start(tmp_path):
    out = tmp_path / "run"
    make_trainer(vae(out, epochs=1)).fit()
    stale = [out / ".last.pt.0a1b2c3d.tmp", out / "samples" / ".epoch_001.png.1234abcd.tmp"]
    for p in stale:
        p.write_bytes(b"x" * 1000)  # what a SIGKILL during a save leaves
    other = out / ".notes.tmp"
    other.write_text("not deepfast's")
    make_trainer(vae(out, epochs=2)).fit(resume=True)
    assert not any(p.exists() for p in stale) and other.exists()


def test_resume_refuses_another_lr_and_fewer_epochs(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(cli_args(out, "--epochs", "2", "--lr", "0.001")) == 0
    config = (out / "config.json").read_bytes()
    assert cli.main(["train", "vae", "--out", str(out), "--resume", "--lr", "0.5", "--epochs", "3"]) == 2
    assert "settings differ (lr: 0.001 there, 0.5 here)" in capsys.readouterr().err
    assert cli.main(["train", "vae", "--out", str(out), "--resume", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "with epochs=1: the run has trained 2 epochs already; give --epochs 2 or more" in err
    assert cli.main(["train", "vae", "--out", str(out), "--resume"]) == 0  # its own 2 epochs: nothing to do
    assert "has trained all 2 epochs already: nothing to do" in capsys.readouterr().out
    assert (out / "config.json").read_bytes() == config
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_save_on_a_full_disk_says_so_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    """Injected: the write fails with ENOSPC at epoch 2's save (see test_full_tmpfs for a real disk)."""
    out = tmp_path / "run"
    trainer = make_trainer(vae(out, epochs=3, sample_every=0))
    real_fsync, calls = os.fsync, []

    def full_at_second_save(fd):
        calls.append(fd)
        if len(calls) == 3:  # epoch 1: the file and its folder; epoch 2: the file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_at_second_save)
    with pytest.raises(
        OSError,
        match=r"cannot write checkpoint .*last.pt: No space left on device \(the previous "
        r"last.pt is kept as it was\)",
    ):
        trainer.fit()
    monkeypatch.undo()
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert [p.name for p in out.glob(".*.tmp")] == []


@pytest.fixture
def tmpfs(tmp_path):
    """A mounted tmpfs folder of a size set by the test (``mount(size)``); skipped where mounting fails."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    mounted = []

    def mount(size: int) -> Path:
        run = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if run.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {run.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for m in mounted:
        subprocess.run(["umount", str(m)], check=True)


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="mounts a tmpfs (Linux, root)")
def test_full_tmpfs(tmp_path, tmpfs, capsys):
    """A real full disk: a tmpfs that holds one checkpoint and a half; the second save does not fit."""
    probe = tmp_path / "probe"
    assert cli.main(cli_args(probe, "--epochs", "1", "--sample-every", "0")) == 0
    size = (probe / "last.pt").stat().st_size
    disk = tmpfs(size * 3 // 2 + 64 * 1024)  # + room for metrics, config, the lock
    out = disk / "run"
    assert cli.main(cli_args(out, "--epochs", "3", "--sample-every", "0")) == 2
    err = capsys.readouterr().err
    assert f"cannot write checkpoint {out / 'last.pt'}: No space left on device (the previous last.pt is kept" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert [p.name for p in out.glob(".*.tmp")] == []


def test_option_values_of_the_wrong_kind_name_the_option(tmp_path, capsys):
    base = [
        "train",
        "classifier",
        "--data",
        "tiny",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "c"),
        "--no-progress",
        "--device",
        "cpu",
        "--adversarial",
        "pgd",
    ]
    for option, message in (
        ("eps=inf", "option eps must be finite and >= 0, got inf"),
        ("eps=nan", "option eps must be finite and >= 0, got nan"),
        ("eps=abc", "option eps must be a number (default 0.2), got 'abc'"),
        ("width=8.5", "option width must be an int (default 64), got 8.5"),
        ("defense=1", "option defense must be a string (default 'at'), got 1"),
    ):
        assert cli.main([*base, "-o", option]) == 2, option
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_vae_trains_under_amp(tmp_path, amp):
    result = make_trainer(vae(tmp_path, epochs=2, amp=amp, sample_every=0)).fit()
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.metrics)


def test_vae_loss_takes_low_precision_reconstructions():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 5, 6, generator=g)
    recon = torch.rand(3, 1, 5, 6, generator=g).clamp(0.05, 0.95)
    kl = torch.tensor(0.75)  # exact in bfloat16 and float16
    reference = VAELoss()(recon, x, kl)
    for dtype in (torch.bfloat16, torch.float16):
        low = recon.to(dtype)
        torch.testing.assert_close(VAELoss()(low, x, kl.to(dtype)), VAELoss()(low.float(), x, kl), rtol=0, atol=0)
    torch.testing.assert_close(VAELoss()(recon.to(torch.bfloat16), x, kl), reference, rtol=2e-2, atol=0)
    with pytest.raises(ValueError, match=r"x must have the shape and device of recon \(3, 1, 5, 6\)"):
        VAELoss()(recon, x[:2], kl)
