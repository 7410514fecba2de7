#!/usr/bin/env python
"""Training-step speedups measured interleaved: each round times one step of every impl, one after the
other (in an order rotated from round to round), so that load from other processes, which comes and
goes on a shared machine, falls on every impl alike. The speedup of an impl is the median over rounds
of (reference eager step time / its step time) in the same round.

    python benchmarks/compare_train_step.py dcgan 64 --rounds 15
    python benchmarks/compare_train_step.py cyclegan 4 --rounds 3 --impls "reference eager,fused eager"

Impls as in bench_train_step.py: "<reference|fused> <eager|compile>[ cl]" (cl: channels_last). Each
step first runs once as a warm-up (compilation), unchecked: bench_train_step.py checks the losses.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from deepfast.train.step import MODELS, make_step

DEFAULT_IMPLS = "reference eager,fused eager,reference compile,fused compile,reference eager cl,fused eager cl"


def build(model: str, batch: int, impl: str):
    """The step of ``impl`` ("fused eager cl", ...)."""
    kind, mode, *cl = impl.split()
    return make_step(model, kind, batch, mode == "compile", channels_last=bool(cl))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=MODELS)
    parser.add_argument("batch", type=int)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--impls", default=DEFAULT_IMPLS, help=f"comma-separated (default {DEFAULT_IMPLS!r})")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    impls = args.impls.split(",")
    steps = {impl: build(args.model, args.batch, impl) for impl in impls}
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    for r in range(args.rounds):
        for impl in impls[r % len(impls) :] + impls[: r % len(impls)]:
            start = time.perf_counter()
            steps[impl]()
            times[impl].append(time.perf_counter() - start)
    base = times[impls[0]]
    print(
        f"{args.model}, batch {args.batch}, {torch.get_num_threads()} threads, {args.rounds} interleaved rounds; "
        f"speedup: median over rounds of ({impls[0]} time / impl time)"
    )
    print(f"| impl | median ms | vs {impls[0]} |\n|---|---:|---:|")
    for impl in impls:
        ratio = statistics.median(b / t for b, t in zip(base, times[impl]))
        print(f"| {impl} | {statistics.median(times[impl]) * 1e3:.1f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
