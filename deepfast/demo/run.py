"""`deepfast demo`: every model of the library trained on bundled data, one report and its results.json."""

from __future__ import annotations

import json
import os
import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

import deepfast
from deepfast import backends, hardware
from deepfast.demo.adaptation import adaptation_section
from deepfast.demo.conditional import conditional_section
from deepfast.demo.context import Demo
from deepfast.demo.generative import classifier_section, dcgan_section, vae_section
from deepfast.demo.report import Section, write_report
from deepfast.demo.robustness import robustness_section
from deepfast.demo.speed import speed_section
from deepfast.demo.staining import staining_section
from deepfast.train.records import MetricsLog

SECTIONS: list[tuple[str, Callable[[Demo, Section], None]]] = [
    ("Digits classifier (the judge)", classifier_section),
    ("VAE: samples, interpolation, latent sweep, attribute arithmetic", vae_section),
    ("DCGAN: samples and z arithmetic", dcgan_section),
    ("Class-conditional DCGAN: generated labelled digits as augmentation", conditional_section),
    ("Virtual staining with CycleGAN", staining_section),
    ("Domain adaptation with CycleGAN", adaptation_section),
    ("Attacks and defenses", robustness_section),
    ("Fused vs reference training steps", speed_section),
]


def add_curves(demo: Demo, section: Section) -> None:
    """The training curves (deepfast.plots.training_curves) of the runs the section trained."""
    from deepfast.plots import training_curves

    for name in demo.runs:
        rows = MetricsLog(demo.out / "runs" / name).rows
        if rows:
            training_curves(rows, demo.out / "images" / f"curves_{name}.png", title=f"run {name}: per epoch")
            section.image(f"images/curves_{name}.png", f"training curves of run {name} (runs/{name}/metrics.csv)")
    demo.runs.clear()


# What was tried for the targets this demo misses (measured in the runs named; see docs/demo.md).
TRIED = {
    "VAE": "samples of N(0, I): 55% confident, Frechet 53 (batch 32 and 8 latents; 60 epochs 57%); of a mixture of "
    "10 / 20 / 80 Gaussians fitted to the training latents: 87% / 90% / 92%, Frechet 19 / 15 / 14",
    "DCGAN": "at 32x32: an EMA generator 41%, resize-convolution 45%, DiffAugment 52% (Frechet 31); at 16x16 with "
    "DiffAugment 39% (79); at 8x8, the digits' own size, with 2 extra layers: ngf 64 54% with DiffAugment "
    "and 65% (Frechet 27) without, ngf 128 70% (Frechet 20); from there hinge loss 65%, LSGAN 64%, one-sided "
    "label smoothing 68%, spectral norm in D 69% (Frechet 10), top-k G steps 68%, D's lr doubled 66%, lr "
    "decay 66%, EMA generators 62-69% (BatchNorm statistics recomputed: Frechet 10-16); 43 epochs 75% (Frechet "
    "8) alone, 70% in a fresh demo run, which then took 616 s",
    "staining": "per-pixel generators (no texture, no checkerboard), no identity loss, Adam 1e-3; cycle weight 10: "
    "SSIM 0.86, PSNR 21.7 dB on the balanced domains, cycle 3: 0.95 / 28.5 dB; the saliency constraint at "
    "weight 10 / 1 / 0.3 / 0.1 there: 19.0 / 22.6 / 23.3-26.1 / 27.8 dB; on stain_skewed at most 0.73 / 17.2 dB",
    "adaptation": "a smaller CycleGAN (ngf 16, 3 blocks, batch 8, 3 epochs) to fit 3 seeds; CyCADA's semantic "
    "consistency lowered seed 0's gain from +5.3 to -3.3 points (+1.1 with ngf 32, 4 epochs); the "
    "previous ngf 32, 6 blocks, 6 epochs gained +10 to +14.5 points in 3-4x the time; colour jitter "
    "on the translations (seeds +1.9 / +4.2 / +12.8 -> +21.2 / +17.5 / +15.6 on the same CycleGANs); "
    "then self-training on class-balanced pseudo-labels of the target +25.9 / +16.2 / +16.2, "
    "source + translations +22.0 / +17.0 (seeds 0 / 1), neither kept",
}


def targets_section(demo: Demo) -> Section:
    section = Section("Targets")
    rows = [
        {
            "result": name,
            "value": t.value,
            "target": t.to_dict()["target"],
            "met": "yes" if t.met else "NO",
            "tried": "" if t.met else next((v for k, v in TRIED.items() if name.lower().startswith(k.lower())), ""),
        }
        for name, t in demo.targets.items()
    ]
    missed = [name for name, t in demo.targets.items() if not t.met]
    section.text(
        f"{len(rows) - len(missed)} of {len(rows)} targets met" + (f"; missed: {', '.join(missed)}." if missed else ".")
    )
    section.table(rows)
    return section


def thread_count(threads: int | None) -> str:
    """Sets torch's CPU threads for the run and says where the count comes from: ``threads`` when given;
    else OMP_NUM_THREADS when set; else torch's default (one per physical core) cut to the CPUs that
    other work keeps busy now (deepfast.hardware.busy_cpus, at least 1 left): on CPUs that other work
    keeps busy, OpenMP threads that wait for each other made the demo's small steps several times slower
    than one thread (measured: the judge 38 s with 2 threads beside two other jobs on 2 CPUs, 5 s with 1).
    The busy count is sampled over half a second, not read from the load average, which still counts a
    job that ended a minute ago (load 1.1 on an idle 2-CPU machine gave 1 thread)."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        source = "--threads"
    elif "OMP_NUM_THREADS" in os.environ:
        threads, source = torch.get_num_threads(), f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    else:
        default, busy, cpus = torch.get_num_threads(), hardware.busy_cpus(), len(os.sched_getaffinity(0))
        threads = max(1, min(default, round(cpus - busy)))
        source = f"torch's default {default}" + (
            "" if threads == default else f", cut to the CPUs free with {busy:.1f} of {cpus} busy"
        )
    torch.set_num_threads(threads)
    return f"{threads} torch thread{'s' if threads != 1 else ''} ({source})"


def run_demo(
    out: str | Path = "runs/demo",
    full: bool = False,
    device: str | None = None,
    progress: bool = True,
    only: list[str] | None = None,
    smoke: bool = False,
    threads: int | None = None,
) -> tuple[Path, list[str]]:
    """Runs the sections (those whose title contains one of ``only``, default all) into ``out`` and
    writes out/report.html and out/results.json (every number, the targets, section times, the CPU,
    the torch threads). ``threads``: torch's CPU threads for the run (None: OMP_NUM_THREADS, else
    torch's default cut to the CPUs other work leaves free; see thread_count). Finished training runs in out/runs are reused, interrupted
    ones resumed. A section that fails shows its error in the report and the others still run.
    Returns the report's path and the titles of the failed sections."""
    previous = torch.get_num_threads()
    threading = thread_count(threads)
    try:
        return _run(Path(out), full, device, progress, only, smoke, threading)
    finally:
        torch.set_num_threads(previous)


def _run(
    out: Path, full: bool, device: str | None, progress: bool, only: list[str] | None, smoke: bool, threading: str
) -> tuple[Path, list[str]]:
    demo = Demo(out, full=full, smoke=smoke, device=device, progress=progress)
    start, load = time.time(), os.getloadavg()[0]  # before the run: the other work on the CPUs
    sections, failed, seconds = [], [], {}
    for title, fn in SECTIONS:
        if only and not any(word.lower() in title.lower() for word in only) and fn is not classifier_section:
            continue
        section = Section(title)
        print(f"== {title}", flush=True)
        t0 = time.time()
        try:
            fn(demo, section)
            add_curves(demo, section)
        except Exception as exc:  # noqa: BLE001 - the report shows what failed; the other sections run
            failed.append(title)
            section.error(f"this section failed: {exc!r}\n\n{traceback.format_exc()}")
            print(f"   failed: {exc!r}", flush=True)
        section.seconds = seconds[title] = time.time() - t0
        sections.append(section)
    wall = time.time() - start
    cpu = hardware.describe()
    settings = "smoke-test" if smoke else "full" if full else "quick"
    meta = [
        f"CPU: {cpu}",
        f"deepfast {deepfast.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
        f"{platform.machine()}, {threading}, backends "
        f"{', '.join(name for name, s in backends.status().items() if s.available)}; load average "
        f"{load:.1f} at the start (other work on the CPUs)",
        f"{settings} settings, {wall:.0f} s in all ("
        + ", ".join(f"{title.split(':')[0]} {s:.0f} s" for title, s in seconds.items())
        + "), "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
    ]
    if demo.targets:
        sections.insert(0, targets_section(demo))
    path = write_report(demo.out / "report.html", "deepfast demo", meta, sections)
    results = {
        "cpu": cpu,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "threading": threading,
        "load_average_at_start": load,
        "settings": settings,
        "wall_seconds": wall,
        "section_seconds": seconds,
        "failed": failed,
        "targets": {name: t.to_dict() for name, t in demo.targets.items()},
        "results": demo.results,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    tmp = demo.out / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, default=float) + "\n")
    os.replace(tmp, demo.out / "results.json")
    return path, failed
