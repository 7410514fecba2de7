"""Demo section: the training step of the library's trainers with fused deepfast layers against the same
models built from plain torch layers (impl="reference"), timed in this run on this machine."""

from __future__ import annotations

import statistics
import time

import torch

from deepfast.demo.context import Demo
from deepfast.demo.report import Section
from deepfast.train import TrainConfig, make_trainer

# (trainer, batch, image size, channels, options): the shapes of benchmarks/bench_train_step.py
STEPS = [
    ("vae", 128, 32, 1, {}),
    ("dcgan", 64, 32, 1, {}),
    ("cyclegan", 1, 128, 3, {"ngf": 64, "n_blocks": 6, "ndf": 64}),
]


def step_ms(name: str, impl: str, batch: int, size: int, channels: int, options: dict, repeats: int,
            device: str | None) -> float:
    """Median milliseconds of ``repeats`` training steps (after 2 warm-up steps) of trainer ``name`` on a
    fixed random batch."""
    trainer = make_trainer(TrainConfig(model=name, impl=impl, batch_size=batch, image_size=size, options=options,
                                       device=device, progress=False))
    trainer.device = torch.device(device or "cpu")
    trainer.setup(channels)
    g = torch.Generator().manual_seed(0)
    lo, hi = trainer.value_range
    images = [torch.rand(batch, channels, size, size, generator=g).mul(hi - lo).add(lo).to(trainer.device)
              for _ in range(2)]
    batch_data = (images[0], images[1]) if name == "cyclegan" else images[0]
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        trainer.train_step(batch_data)
        trainer.scaler.update()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def speed_section(demo: Demo, section: Section) -> None:
    repeats = 1 if demo.smoke else demo.pick(3, 15)
    rows = []
    for name, batch, size, channels, options in STEPS:
        if demo.smoke:
            size = 32
        ms = {impl: step_ms(name, impl, batch, size, channels, options, repeats, demo.device)
              for impl in ("reference", "fused")}
        rows.append({"training step": f"{name}, batch {batch}, {channels}x{size}x{size}",
                     "reference ms": ms["reference"], "fused ms": ms["fused"],
                     "speedup": ms["reference"] / ms["fused"]})
    section.text(f"One training step (forward, losses, backward, optimizer) of the library's trainers, median of "
                 f"{repeats} after 2 warm-up steps, eager, on this machine in this run: impl=\"fused\" (deepfast's "
                 "fused norm + activation layers, fused reparameterization + KL, fused cycle L1) against "
                 "impl=\"reference\" (the same models from plain torch layers, the same weights). "
                 "`python benchmarks/run.py -k train_step` adds torch.compile and activation memory.")
    section.table(rows)
    demo.results["speed"] = rows
