"""Kill-safety: training SIGKILLed at random moments, mid-save included, never loses its last good state.

A child process trains a small VAE (fused kernels, one thread) with every fsync slowed down (a slow disk).
Every other kill comes at a random moment of the run; the others as soon as a checkpoint's temporary
file appears, so while that checkpoint is being written (each leaves the file behind). After each kill the
run folder's last.pt (when there is one yet) must load, digest checked; the next child resumes from it
(or starts afresh when the kill came before the first save). Once a run has reached its end it must
equal an uninterrupted run, and the next kills go to a new run; after the last kill a child runs to the
end: its weights, optimizer states and metrics must equal those of an uninterrupted run bit for bit,
and no temporary file is left. ``make test`` kills a 3-epoch run 3 times; ``make fuzz`` (DEEPFAST_FUZZ=long)
6-epoch runs 30 times.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import fuzz_cases
from deepfast.train import load_checkpoint

CHILD = """
import os, sys, time
import torch
torch.set_num_threads(1)
from deepfast.train import TrainConfig, make_trainer
out, slow, epochs = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
if slow:  # a slow disk: every fsync (checkpoint, folder, sample grid) takes `slow` seconds more
    fsync = os.fsync
    os.fsync = lambda fd: (time.sleep(slow), fsync(fd))[1]
config = TrainConfig(model="vae", data="digits", out=out, epochs=epochs, batch_size=32, max_batches=3, progress=False,
                     sample_every=1, samples=4, device="cpu", options={"latent_dim": 4, "width": 8})
resume = os.path.exists(os.path.join(out, "last.pt"))
print("ready", flush=True)
make_trainer(config).fit(resume=resume, overwrite=not resume)
print("finished", flush=True)
"""


EPOCHS = fuzz_cases(3, 6)


def child(out: Path, slow: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(out), str(slow), str(EPOCHS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def finish(out: Path, slow: float = 0.0) -> float:
    """Runs (or resumes) the training in ``out`` to its end; returns the seconds it took after "ready"."""
    proc = child(out, slow)
    start = time.monotonic()
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "finished" in stdout, stderr[-3000:]
    return time.monotonic() - start


def state(out: Path) -> tuple:
    ckpt = load_checkpoint(out / "last.pt")
    rows = [
        {k: v for k, v in json.loads(line).items() if k != "time"}
        for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    return ckpt["epoch"], ckpt["batch"], ckpt["models"], ckpt["optimizers"], rows


def assert_equal(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def finished(out: Path) -> bool:
    """Whether the run in ``out`` has trained all its epochs (a kill of its next child would test nothing)."""
    if not (out / "last.pt").exists():
        return False
    ckpt = load_checkpoint(out / "last.pt")
    return ckpt["epoch"] == EPOCHS and ckpt["batch"] == 0


def check_done(out: Path, expected: tuple) -> None:
    """Runs ``out`` to its end (a resume that may have nothing left to do); it must be the uninterrupted run."""
    finish(out)
    assert_equal(state(out), expected)
    assert not list(out.glob(".*.tmp")) and not list(out.glob("samples/.*.tmp"))


@pytest.mark.fuzz
def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_run(tmp_path):
    slow = 0.05
    reference = tmp_path / "reference"
    duration = finish(reference, slow)  # the whole run, slow saves included, as a kill's time range
    expected = state(reference)
    rng = random.Random(14)
    kills, aimed, mid_save, runs = fuzz_cases(3, 30), 0, 0, 1
    out = tmp_path / "killed1"
    for kill in range(kills):
        if finished(out):  # the kills so far let it finish: check it, and go on killing a new run
            check_done(out, expected)
            runs += 1
            out = tmp_path / f"killed{runs}"
        proc = child(out, slow)
        if kill % 2:  # at a random moment of the run
            time.sleep(rng.uniform(0, duration))
        else:  # while a checkpoint is being written: as soon as its temporary file appears
            while proc.poll() is None and not list(out.glob(".last.pt.*.tmp")):
                time.sleep(0.002)
            aimed += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        temps = list(out.glob(".last.pt.*.tmp")) + list(out.glob("samples/.*.tmp"))
        mid_save += bool(temps)
        if (out / "last.pt").exists():
            ckpt = load_checkpoint(out / "last.pt")  # never a damaged or half-written file
            assert ckpt["epoch"] <= EPOCHS, f"kill {kill}"
    assert mid_save >= aimed == (kills + 1) // 2  # every kill aimed at a write hit one
    check_done(out, expected)
    print(f"{kills} kills in {runs} runs, {mid_save} of them during a write (a temporary file left)")
