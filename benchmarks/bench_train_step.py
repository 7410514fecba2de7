"""Benchmarks of one training step (forward, loss, backward, optimizer step) of the models, fused vs
reference layers, eager and compiled (the steps: deepfast/train/step.py).

Rows (op "train_step <model>", shape = the batch (N, C, H, W), mode "train step"):
  vae        batch 128, digits 1x32x32
  dcgan      batch 64, digits 1x32x32 (a D step and a G step)
  cyclegan   batch 1 and 4, ihc patches 3x128x128 (a G step and a D step of two generators and two
             discriminators); batch 4 is ``large`` (not in --quick)
  impls      "reference eager" (plain torch layers; the table's "eager" column), "reference compile"
             (torch.compile of those networks; the "compile" column), "fused eager", "fused compile"
             (deepfast layers), "reference eager cl" and "fused eager cl" (channels_last networks and batch)

Every row first runs one step from the weights of seed 0 and the noise of seed 1 and checks its losses
against those of the reference eager step (computed once per model and batch), then is timed over a
fixed number of rounds of one step each (training goes on from step to step). Every row also records
the activation memory of one step: the bytes of the storages autograd saves for backward over the
whole step (every forward in it), parameters left out (deepfast/_memory.py); "saved MB" in the table.
Under torch.compile that is what the compiled graphs save (the partitioner recomputes cheap ops).
"""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import measure
from deepfast._memory import step_saved_bytes
from deepfast.train.step import make_step

# (model, batch, image shape (C, S, S), timed rounds); the last one is large.
CASES = [
    pytest.param("vae", 128, (1, 32, 32), 30, id="vae-128"),
    pytest.param("dcgan", 64, (1, 32, 32), 20, id="dcgan-64"),
    pytest.param("cyclegan", 1, (3, 128, 128), 5, id="cyclegan-1"),
    pytest.param("cyclegan", 4, (3, 128, 128), 3, id="cyclegan-4", marks=pytest.mark.large),
]
IMPLS = ("reference eager", "reference compile", "fused eager", "fused compile", "reference eager cl", "fused eager cl")
ROLES = {"reference eager": "eager", "reference compile": "compile"}
LOSS_TOL = dict(rtol=1e-3, atol=1e-4)

_reference_losses: dict[tuple[str, int], tuple[torch.Tensor, ...]] = {}


def _first_losses(step) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(1)
    return step()


def _reference(model: str, batch: int, device) -> tuple[torch.Tensor, ...]:
    """The losses of the first reference eager step (computed here unless that row ran first)."""
    key = (model, batch)
    if key not in _reference_losses:
        _reference_losses[key] = _first_losses(make_step(model, "reference", batch, device=device))
    return _reference_losses[key]


@pytest.mark.parametrize("impl", IMPLS, ids=[i.replace(" cl", " channels_last").replace(" ", "-") for i in IMPLS])
@pytest.mark.parametrize("model, batch, image, rounds", CASES)
def test_train_step(benchmark, device, copy_bandwidth, model, batch, image, rounds, impl):
    kind, _, mode = impl.partition(" ")
    compiled, channels_last = mode == "compile", mode.endswith(" cl")
    if compiled:
        torch._dynamo.reset()
    step = make_step(model, kind, batch, compiled, channels_last=channels_last, device=device)
    losses = _first_losses(step)
    if impl == "reference eager":
        _reference_losses.setdefault((model, batch), losses)
    for got, want in zip(losses, _reference(model, batch, device), strict=True):
        torch.testing.assert_close(got, want, **LOSS_TOL)
    saved = step_saved_bytes(step, exclude=step.models.parameters())
    measure(
        benchmark,
        step,
        device=device,
        copy_bandwidth=copy_bandwidth,
        bytes_moved=0,
        op=f"train_step {model}",
        shape=(batch, *image),
        mode="train step",
        impl=impl,
        role=ROLES.get(impl, impl),
        dtype="float32",
        warmup=1,
        rounds=rounds,
        saved_mb=saved / 2**20,
    )
