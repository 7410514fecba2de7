#!/usr/bin/env python
"""Where the time of a training step goes: torch.profiler over a few steps (deepfast/train/step.py),
the self CPU time of the ops summed into categories, per step, for each impl.

    python benchmarks/profile_train_step.py dcgan 64                   # reference and fused, eager
    python benchmarks/profile_train_step.py cyclegan 1 --impls fused --top 20 --threads 1

Categories (by op name): conv (convolution forward and backward, reflection padding of the convs),
norm+act (batch / instance norm, LeakyReLU / ReLU, the fused deepfast::norm_leaky_relu ops and their
autograd nodes), optimizer (Adam), other (losses, the rest of autograd, allocation, copies).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from deepfast.train.step import MODELS, make_step

CATEGORIES = {
    "conv": ("convolution", "reflection_pad"),
    "norm+act": ("batch_norm", "instance_norm", "leaky_relu", "relu", "threshold", "norm_leaky_relu"),
    "optimizer": ("Optimizer", "_foreach", "addcdiv", "addcmul", "lerp", "sqrt"),
}


def category(name: str) -> str:
    return next((cat for cat, keys in CATEGORIES.items() if any(k in name for k in keys)), "other")


def profile_step(model: str, impl: str, batch: int, steps: int, channels_last: bool):
    """(wall ms per step, {category: self CPU ms per step}, key_averages) over ``steps`` steps."""
    step = make_step(model, impl, batch, channels_last=channels_last)
    for _ in range(2):  # warm-up
        step()
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    wall = (time.perf_counter() - start) / steps * 1e3
    averages = prof.key_averages()
    per_category: dict[str, float] = {}
    for event in averages:
        cat = category(event.key)
        per_category[cat] = per_category.get(cat, 0.0) + event.self_cpu_time_total / steps / 1e3
    return wall, per_category, averages


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=MODELS)
    parser.add_argument("batch", type=int)
    parser.add_argument("--impls", default="reference,fused", help="comma-separated (default reference,fused)")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--top", type=int, default=0, help="also print the N ops of most self CPU time")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"{args.model}, batch {args.batch}, {torch.get_num_threads()} threads"
        + (", channels_last" if args.channels_last else "")
    )
    for impl in args.impls.split(","):
        wall, cats, averages = profile_step(args.model, impl, args.batch, args.steps, args.channels_last)
        total = sum(cats.values())
        shares = ", ".join(
            f"{cat} {ms:.0f} ms ({100 * ms / total:.0f}%)" for cat, ms in sorted(cats.items(), key=lambda kv: -kv[1])
        )
        print(f"{impl:9s} {wall:8.1f} ms/step (profiled); self CPU per step: {shares}")
        if args.top:
            print(averages.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
