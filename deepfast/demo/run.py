"""`deepfast demo`: every model of the library trained on bundled data, one report."""

from __future__ import annotations

import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

import deepfast
from deepfast import backends
from deepfast.demo.adaptation import adaptation_section
from deepfast.demo.context import Demo
from deepfast.demo.generative import classifier_section, dcgan_section, vae_section
from deepfast.demo.report import Section, write_report
from deepfast.demo.robustness import robustness_section
from deepfast.demo.speed import speed_section
from deepfast.demo.staining import staining_section

SECTIONS: list[tuple[str, Callable[[Demo, Section], None]]] = [
    ("Digits classifier (the judge)", classifier_section),
    ("VAE: samples, interpolation, latent sweep, attribute arithmetic", vae_section),
    ("DCGAN: samples and z arithmetic", dcgan_section),
    ("Virtual staining with CycleGAN", staining_section),
    ("Domain adaptation with CycleGAN", adaptation_section),
    ("Attacks and defenses", robustness_section),
    ("Fused vs reference training steps", speed_section),
]


def run_demo(out: str | Path = "runs/demo", full: bool = False, device: str | None = None,
             progress: bool = True, only: list[str] | None = None, smoke: bool = False) -> tuple[Path, list[str]]:
    """Runs the sections (those whose title contains one of ``only``, default all) into ``out`` and
    writes out/report.html. Finished training runs in out/runs are reused, interrupted ones resumed.
    A section that fails shows its error in the report and the others still run. Returns the
    report's path and the titles of the failed sections."""
    demo = Demo(Path(out), full=full, smoke=smoke, device=device, progress=progress)
    start = time.time()
    sections, failed = [], []
    for title, fn in SECTIONS:
        if only and not any(word.lower() in title.lower() for word in only) and fn is not classifier_section:
            continue
        section = Section(title)
        print(f"== {title}", flush=True)
        t0 = time.time()
        try:
            fn(demo, section)
        except Exception as exc:  # noqa: BLE001 - the report shows what failed; the other sections run
            failed.append(title)
            section.error(f"this section failed: {exc!r}\n\n{traceback.format_exc()}")
            print(f"   failed: {exc!r}", flush=True)
        section.seconds = time.time() - t0
        sections.append(section)
    meta = [f"deepfast {deepfast.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
            f"{platform.machine()} {torch.get_num_threads()} threads, backends "
            f"{', '.join(name for name, s in backends.status().items() if s.available)}",
            f"{'smoke-test' if smoke else 'full' if full else 'quick'} settings, {time.time() - start:.0f} s in all, "
            f"{time.strftime('%Y-%m-%d %H:%M')}"]
    path = write_report(demo.out / "report.html", "deepfast demo", meta, sections)
    return path, failed
