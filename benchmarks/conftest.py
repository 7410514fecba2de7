"""Shared fixtures and helpers of the deepfast benchmark suites (benchmarks/bench_<op>.py).

Run them through ``python benchmarks/run.py`` (which enables pytest-benchmark, collects bench_*.py
and prints a table), or by hand:

    pytest benchmarks -p no:cacheprovider --benchmark-enable -o python_files='bench_*.py'

benchmarks/ is a package so that this conftest is ``benchmarks.conftest`` and does not shadow
tests/conftest.py when both directories are collected; suites import the helpers below with
``from benchmarks.conftest import measure, shape_params, ...``.

What a suite gets from here:

- ``device``: the device benchmarked (cuda when torch sees a GPU, else cpu; DEEPFAST_BENCH_DEVICE
  overrides).
- ``copy_bandwidth``: the copy bandwidth of that device, measured once per run (``dst.copy_(src)``
  of a large float32 tensor, best of several; read + write counted: 2 * bytes / time). Every
  throughput is reported as a fraction of it, so numbers from different machines compare.
- ``measure(benchmark, fn, ...)``: warms ``fn`` up outside the timed region, times it with
  pytest-benchmark (CUDA-synchronised on a GPU), and records in ``benchmark.extra_info`` the labels
  of the row (op, shape, mode, impl) and, from the minimum bytes the op must move, the achieved
  GB/s and the % of copy bandwidth. run.py builds its table from these keys only.
- ``shape_params(*shapes)``: pytest params for shapes, the large ones marked ``large`` (deselected
  by ``run.py --quick``).
- ``backend_impls(device)``: the deepfast backends that can run on the device, never the Triton
  interpreter.
- ``measure_impl(benchmark, impl, reference, fused, make_step, ...)``: one row of an op's table, for
  impl "eager" (the reference), "compile" (torch.compile of it) or a backend (the fused op), checked
  against the reference before it is timed with ``measure``.
"""

from __future__ import annotations

import os
import platform
import time

import pytest
import torch

import deepfast
from deepfast import backends

# Shapes with at least this many elements are "large" (run.py --quick leaves them out).
LARGE_NUMEL = 1 << 24

_copy_bandwidth: dict[str, float] = {}  # device type -> bytes/s, filled by the copy_bandwidth fixture


# --- device ------------------------------------------------------------------------------------------


def bench_device() -> torch.device:
    name = os.environ.get("DEEPFAST_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """Human name of the device: the GPU name, or the CPU model from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _synced_timer(device: torch.device):
    """perf_counter that first waits for the GPU: a round of N calls is timed from sync to sync."""

    def timer() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return timer


@pytest.fixture(scope="session")
def device() -> torch.device:
    return bench_device()


# --- copy bandwidth ----------------------------------------------------------------------------------


def measure_copy_bandwidth(device: torch.device, nbytes: int | None = None, repeats: int = 7) -> float:
    """Bytes per second of ``dst.copy_(src)`` for float32 tensors of ``nbytes`` each (read + write)."""
    if nbytes is None:
        nbytes = (1 << 30) if device.type == "cuda" else (256 << 20)
    n = nbytes // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # first touch: page faults / allocation out of the timed region
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    del src, dst
    return 2 * nbytes / best


@pytest.fixture(scope="session")
def copy_bandwidth(device: torch.device) -> float:
    """Copy bandwidth (bytes/s, read + write) of ``device``, measured in this run."""
    if device.type not in _copy_bandwidth:
        _copy_bandwidth[device.type] = measure_copy_bandwidth(device)
    return _copy_bandwidth[device.type]


# --- what to benchmark -------------------------------------------------------------------------------


def shape_params(*shapes: tuple[int, ...]) -> list:
    """pytest.param for each shape, id "AxB", marked ``large`` from LARGE_NUMEL elements on."""
    params = []
    for shape in shapes:
        numel = 1
        for s in shape:
            numel *= s
        marks = [pytest.mark.large] if numel >= LARGE_NUMEL else []
        params.append(pytest.param(tuple(shape), id=shape_id(shape), marks=marks))
    return params


def shape_id(shape) -> str:
    return "x".join(str(s) for s in shape)


def backend_impls(device: torch.device) -> list[str]:
    """The compiled deepfast backends that run tensors of ``device`` here (never the Triton interpreter)."""
    status = backends.status()
    names = []
    for name in backends.BACKENDS:
        if name == "torch" or not status[name].available or not backends.runs_on(name, device.type):
            continue
        if name == "triton" and (device.type != "cuda" or backends.triton_interpreted()):
            continue
        names.append(name)
    return names


# --- measuring ---------------------------------------------------------------------------------------


def measure(
    benchmark,
    fn,
    *,
    device: torch.device,
    copy_bandwidth: float,
    bytes_moved: int,
    op: str,
    shape,
    mode: str,
    impl: str,
    warmup: int = 3,
    rounds: int | None = None,
    **extra,
):
    """Time ``fn()`` with pytest-benchmark and label the result for run.py's table.

    ``fn`` is warmed up ``warmup`` times first (compilation, allocator, caches) outside the timed
    region. Rounds and iterations are calibrated by pytest-benchmark (--benchmark-max-time,
    --benchmark-min-rounds ...). On a GPU the timer synchronises at the start and end of each round,
    so the calls of a round queue on the stream back to back, as in training, and the time of a
    round is the time the GPU took for them.

    ``bytes_moved`` is the least the op must read and write; GB/s is bytes_moved / median time (0: no
    GB/s). ``rounds`` fixes the number of rounds of one call each (for slow steps), instead of
    pytest-benchmark's calibration.
    """
    info = benchmark.extra_info
    info.update(
        op=op,
        shape=shape_id(shape) if not isinstance(shape, str) else shape,
        mode=mode,
        impl=impl,
        device=device_name(device),
        device_type=device.type,
        bytes=int(bytes_moved),
        copy_bandwidth_gbps=copy_bandwidth / 1e9,
        threads=torch.get_num_threads(),
    )
    info.update(extra)
    for _ in range(warmup):
        fn()
    synchronize(device)
    run = benchmark if rounds is None else lambda f: benchmark.pedantic(f, rounds=rounds, iterations=1)
    if device.type == "cuda" and hasattr(benchmark, "_timer"):
        benchmark._timer = _synced_timer(device)
        result = run(fn)
    elif device.type == "cuda":  # fallback if the fixture's timer cannot be swapped: sync in every call

        def fn_synced():
            out = fn()
            torch.cuda.synchronize(device)
            return out

        result = run(fn_synced)
    else:
        result = run(fn)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        median = stats.stats.median
        info["median_s"] = median
        if bytes_moved:
            info["gbps"] = bytes_moved / median / 1e9
            info["pct_copy_bandwidth"] = 100.0 * bytes_moved / median / copy_bandwidth
    return result


def measure_impl(
    benchmark,
    impl: str,
    reference,
    fused,
    make_step,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-4,
    label: str | None = None,
    **labels,
):
    """Time one impl row of an op: ``make_step(fn)`` returns the zero-argument step to time, calling ``fn``.

    impl "eager": fn is ``reference``; "compile": torch.compile of it (static shapes, compiled afresh
    for this test: no recompile limits from earlier tests); a backend name: ``fused`` with that backend
    forced. Except for eager, the outputs of the step (a tuple of tensors) are first checked against
    those of ``make_step(reference)``, computed first (so a ``fused`` that updates an input in place is
    checked from the same inputs), so that every row measures a correct implementation. ``label`` is
    the row's impl column (default: impl); ``labels`` go to ``measure``.
    """
    backend = None
    if impl == "eager":
        fn = reference
    elif impl == "compile":
        torch._dynamo.reset()
        fn = torch.compile(reference, dynamic=False)
    else:
        fn, backend = fused, impl
    step = make_step(fn)
    with deepfast.use_backend(backend or "auto"):
        if impl != "eager":
            expected = make_step(reference)()
            for got, want in zip(step(), expected, strict=True):
                torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
        return measure(benchmark, step, impl=label or impl, **labels)


# --- pytest hooks ------------------------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line("markers", f"large: a shape of at least {LARGE_NUMEL} elements (left out by --quick)")
    # torch.compile's internals use torch.jit.script_method, deprecated in recent torch: not ours to fix
    config.addinivalue_line("filterwarnings", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def pytest_report_header(config):
    dev = bench_device()
    lines = [f"deepfast {deepfast.__version__}, torch {torch.__version__}, device {dev} ({device_name(dev)})"]
    lines.append(f"torch threads {torch.get_num_threads()}")
    for name, st in backends.status().items():
        lines.append(f"  backend {name:7s} {'yes' if st.available else 'no '}  {st.detail}")
    lines.append(f"benchmarked deepfast backends on {dev.type}: {', '.join(backend_impls(dev)) or 'none'}")
    return lines


def pytest_benchmark_update_machine_info(config, machine_info):
    dev = bench_device()
    machine_info["deepfast"] = {
        "version": deepfast.__version__,
        "torch": torch.__version__,
        "device_type": dev.type,
        "device_name": device_name(dev),
        "torch_threads": torch.get_num_threads(),
        "copy_bandwidth_gbps": _copy_bandwidth.get(dev.type, 0.0) / 1e9 or None,
        "backends": {name: {"available": st.available, "detail": st.detail} for name, st in backends.status().items()},
        "benchmarked_backends": backend_impls(dev),
    }
