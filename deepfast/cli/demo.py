"""`deepfast demo`: the main job on bundled data, one HTML report."""

from __future__ import annotations

import argparse


def demo(args: argparse.Namespace) -> int:
    """Train every model on bundled data and write OUT/report.html."""
    from deepfast.demo.run import run_demo

    only = [w for w in (args.only or "").split(",") if w]
    path, failed = run_demo(
        args.out, full=args.full, device=args.device, progress=not args.no_progress, only=only, threads=args.threads
    )
    print(f"wrote {path}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def add_parsers(commands) -> None:
    p = commands.add_parser(
        "demo",
        help="train every model on bundled data and write an HTML report",
        description="The main job on bundled data: a digits classifier, a VAE and a DCGAN with their latent "
        "spaces, a class-conditional DCGAN as augmentation, CycleGAN virtual staining (with and "
        "without the saliency constraint), domain adaptation over 3 seeds, attacks and defenses with "
        "the physical-world plot, and fused vs reference step times, in OUT/report.html with every "
        "number and its target in OUT/results.json (--full for longer, better runs). Finished runs "
        "in OUT/runs are reused and interrupted ones resumed, so a second call only redoes what is "
        "missing.",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--full", action="store_true", help="longer training, larger images")
    p.add_argument("--only", help="comma-separated words: run only the sections whose titles contain one")
    p.add_argument("--device", help="cpu or cuda (default: cuda when there is one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: OMP_NUM_THREADS, else one per physical "
        "core not kept busy by other work, sampled over half a second)",
    )
    p.set_defaults(func=demo)
