"""Demo section: the training step of the library's trainers with fused deepfast layers against the same
models built from plain torch layers (impl="reference"), timed in this run on this machine. The steps
are those of deepfast/train/step.py, which benchmarks/bench_train_step.py times too."""

from __future__ import annotations

import statistics
import time

import torch

from deepfast.demo.context import Demo
from deepfast.demo.report import Section
from deepfast.train.step import TrainStep, make_step

# (model, batch): the cases of benchmarks/bench_train_step.py, at the sizes of deepfast.train.step.SIZES
STEPS = [("vae", 128), ("dcgan", 64), ("cyclegan", 1)]


def step_ms(step: TrainStep, repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls of ``step`` after 2 warm-up calls."""
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        step()
        if step.trainer.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def speed_section(demo: Demo, section: Section) -> None:
    repeats = 1 if demo.smoke else demo.pick(3, 15)
    sizes = {"size": 32} if demo.smoke else {}
    rows = []
    for model, batch in STEPS:
        steps = {
            impl: make_step(model, impl, batch, device=demo.device or "cpu", **sizes) for impl in ("reference", "fused")
        }
        ms = {impl: step_ms(step, repeats) for impl, step in steps.items()}
        images = steps["fused"].batch
        c, h, w = (images[0] if isinstance(images, tuple) else images).shape[1:]
        rows.append(
            {
                "training step": f"{model}, batch {batch}, {c}x{h}x{w}",
                "reference ms": ms["reference"],
                "fused ms": ms["fused"],
                "speedup": ms["reference"] / ms["fused"],
            }
        )
    section.text(
        f"One training step (forward, losses, backward, optimizer) of the library's trainers, median of "
        f'{repeats} after 2 warm-up steps, eager, on this machine in this run: impl="fused" (deepfast\'s '
        "fused norm + activation layers, fused reparameterization + KL, fused cycle L1) against "
        'impl="reference" (the same models from plain torch layers, the same weights). '
        "`python benchmarks/run.py -k train_step` adds torch.compile and activation memory."
    )
    section.table(rows)
    demo.results["speed"] = rows
