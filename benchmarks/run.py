#!/usr/bin/env python
"""Run the deepfast benchmark suites (benchmarks/bench_*.py) and print the results as a table.

    python benchmarks/run.py                      # every suite, every shape
    python benchmarks/run.py --quick              # small shapes, few rounds (~1-2 min on 2 CPU cores)
    python benchmarks/run.py -k reparameterize_kl --out benchmarks/results/cpu-epyc
    python benchmarks/run.py --quick -- -x -v     # arguments after -- go to pytest

The table has one row per benchmark: op, shape, mode, impl, median time, GB/s achieved on the least
bytes the op must move, that as a % of the copy bandwidth measured in the same run, the speedup
over the "eager" and the "compile" rows (by role) of the same (op, shape, mode), and, where a suite
records it (extra_info "saved_mb"), the activation memory saved for backward. It is built only from
the extra_info keys that benchmarks/conftest.py:measure() records, so new suites need no change here;
columns that no row fills are left out.

With --out DIR: DIR/results.json (pytest-benchmark's raw JSON), DIR/results.csv and DIR/table.md.
The exit status is pytest's (non-zero when a benchmark fails or errors), or 1 when no results came.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MODE_ORDER = ("forward", "backward", "forward+backward", "call overhead")
IMPL_ORDER = (
    "eager",
    "compile",
    "torch",
    "cpp",
    "cuda",
    "triton",
    "fused eager",
    "fused compile",
    "reference eager cl",
    "fused eager cl",
)  # the last: training steps
COLUMNS = (
    "op",
    "shape",
    "dtype",
    "mode",
    "impl",
    "median ms",
    "GB/s",
    "% copy BW",
    "vs eager",
    "vs compile",
    "saved MB",
)
RIGHT = {"median ms", "GB/s", "% copy BW", "vs eager", "vs compile", "saved MB"}
# Columns left out of a table where no row has a value (suites without bytes moved or memory).
OPTIONAL = {"GB/s": "gbps", "% copy BW": "pct_copy", "saved MB": "saved_mb"}


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Run the deepfast pytest-benchmark suites and print a table of the results.",
        epilog="Arguments after -- are passed to pytest.",
    )
    parser.add_argument("--quick", action="store_true", help="leave out the large shapes and run few rounds")
    parser.add_argument("--out", metavar="DIR", help="write results.json, results.csv and table.md to DIR")
    parser.add_argument("-k", dest="keyword", metavar="EXPR", help="pytest -k expression selecting benchmarks")
    parser.add_argument(
        "--max-time",
        type=float,
        help="seconds per benchmark (pytest-benchmark --benchmark-max-time); default 1.0, 0.1 with --quick",
    )
    parser.add_argument(
        "--busy-threshold",
        type=float,
        default=10.0,
        help="warn when other processes use more than this %% of the CPUs before or during the run (default 10)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to SECONDS for the CPUs to be idle (3 s in a row under --busy-threshold)",
    )
    args, rest = parser.parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    args.pytest_args = rest
    return args


# --- machine ----------------------------------------------------------------------------------------


def cpu_busy_percent(seconds: float = 1.0) -> float | None:
    """% of all CPUs busy over ``seconds`` (from /proc/stat): others' load, since we sleep meanwhile."""

    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError):
        return None
    total = total1 - total0
    return 100.0 * (total - (idle1 - idle0)) / total if total else None


def cpu_times() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, all CPUs, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values) - idle) / tick, sum(values) / tick


def wait_until_idle(limit_s: float, threshold: float) -> float | None:
    """Wait up to ``limit_s`` for 3 consecutive seconds under ``threshold`` % CPU busy; the last reading."""
    deadline = time.monotonic() + limit_s
    quiet = 0
    busy = cpu_busy_percent()
    while busy is not None and time.monotonic() < deadline:
        quiet = quiet + 1 if busy <= threshold else 0
        if quiet >= 3:
            break
        busy = cpu_busy_percent()
    return busy


# --- running pytest ---------------------------------------------------------------------------------


def pytest_command(args, json_path: str) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        HERE,
        "-p",
        "no:cacheprovider",
        "-o",
        "python_files=bench_*.py",
        "--benchmark-enable",
        f"--benchmark-json={json_path}",
        "--benchmark-columns=min,median,max,rounds,iterations",
        "--benchmark-sort=fullname",
    ]
    max_time = args.max_time if args.max_time is not None else (0.1 if args.quick else 1.0)
    cmd += [f"--benchmark-max-time={max_time}", f"--benchmark-min-rounds={5 if args.quick else 10}"]
    if args.quick:
        cmd += ["-m", "not large"]
    if args.keyword:
        cmd += ["-k", args.keyword]
    return cmd + args.pytest_args


# --- the table --------------------------------------------------------------------------------------


def _numel(shape: str) -> int:
    n = 1
    for part in shape.split("x"):
        try:
            n *= int(part)
        except ValueError:
            return 0
    return n


def _order(value, known) -> tuple:
    return (known.index(value), "") if value in known else (len(known), str(value))


def rows_from(data: dict) -> list[dict]:
    """One row per benchmark, from extra_info (falling back on pytest-benchmark's names)."""
    rows = []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        stats = bench["stats"]
        median = stats["median"]
        nbytes = info.get("bytes")
        copy_bw = info.get("copy_bandwidth_gbps")
        gbps = nbytes / median / 1e9 if nbytes else None
        rows.append(
            {
                "op": info.get("op", bench.get("group") or bench["name"].split("[")[0]),
                "shape": str(info.get("shape", bench.get("param") or "")),
                "dtype": info.get("dtype", ""),
                "mode": info.get("mode", ""),
                "impl": info.get("impl", bench["name"]),
                "role": info.get("role") or info.get("impl", bench["name"]),
                "note": info.get("note"),
                "median_ms": median * 1e3,
                "min_ms": stats["min"] * 1e3,
                "mean_ms": stats["mean"] * 1e3,
                "stddev_ms": stats["stddev"] * 1e3,
                "iqr_ms": stats["iqr"] * 1e3,
                "rounds": stats["rounds"],
                "iterations": stats.get("iterations", 1),
                "bytes": nbytes,
                "gbps": gbps,
                "pct_copy": 100.0 * gbps / copy_bw if gbps and copy_bw else None,
                "saved_mb": info.get("saved_mb"),
                "copy_bandwidth_gbps": copy_bw,
                "device": info.get("device", ""),
                "test": bench["fullname"],
            }
        )
    rows.sort(
        key=lambda r: (
            r["op"],
            _numel(r["shape"]),
            r["shape"],
            r["dtype"],
            _order(r["mode"], MODE_ORDER),
            _order(r["role"], IMPL_ORDER),
            r["impl"],
        )
    )
    groups: dict[tuple, dict[str, float]] = {}
    for r in rows:
        groups.setdefault((r["op"], r["shape"], r["dtype"], r["mode"]), {}).setdefault(r["role"], r["median_ms"])
    for r in rows:
        ref = groups[(r["op"], r["shape"], r["dtype"], r["mode"])]
        r["vs_eager"] = ref["eager"] / r["median_ms"] if "eager" in ref else None
        r["vs_compile"] = ref["compile"] / r["median_ms"] if "compile" in ref else None
    return rows


def _fmt_ms(v: float) -> str:
    return f"{v:.4f}" if v < 0.1 else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def table_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    columns = list(COLUMNS)
    if len({r["dtype"] for r in rows}) <= 1:
        columns.remove("dtype")
    columns = [c for c in columns if c not in OPTIONAL or any(r[OPTIONAL[c]] is not None for r in rows)]
    out = []
    for r in rows:
        cells = {
            "op": r["op"],
            "shape": r["shape"],
            "dtype": r["dtype"],
            "mode": r["mode"],
            "impl": r["impl"],
            "median ms": _fmt_ms(r["median_ms"]),
            "GB/s": "" if r["gbps"] is None else f"{r['gbps']:.1f}",
            "% copy BW": "" if r["pct_copy"] is None else f"{r['pct_copy']:.0f}%",
            "vs eager": "" if r["vs_eager"] is None else f"{r['vs_eager']:.2f}x",
            "vs compile": "" if r["vs_compile"] is None else f"{r['vs_compile']:.2f}x",
            "saved MB": "" if r["saved_mb"] is None else f"{r['saved_mb']:.1f}",
        }
        out.append([cells[c] for c in columns])
    return columns, out


def text_table(rows: list[dict]) -> str:
    columns, cells = table_cells(rows)
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]

    def line(values):
        return "  ".join(v.rjust(w) if c in RIGHT else v.ljust(w) for c, v, w in zip(columns, values, widths)).rstrip()

    lines = [line(columns), line(["-" * w for w in widths])]
    previous = None
    for r, row in zip(rows, cells):
        key = (r["op"], r["shape"], r["dtype"], r["mode"])
        if previous is not None and key != previous:
            lines.append("")
        previous = key
        lines.append(line(row))
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    columns, cells = table_cells(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" if c in RIGHT else "---" for c in columns) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def notes(rows: list[dict]) -> list[str]:
    seen = []
    for r in rows:
        if r["note"] and r["note"] not in seen:
            seen.append(r["note"])
    return seen


def header_lines(data: dict, rows: list[dict], extra: dict) -> list[str]:
    machine = data.get("machine_info", {})
    info = machine.get("deepfast", {})
    device = info.get("device_name") or (rows[0]["device"] if rows else "?")
    copy_bw = info.get("copy_bandwidth_gbps") or next(
        (r["copy_bandwidth_gbps"] for r in rows if r["copy_bandwidth_gbps"]), None
    )
    lines = [
        f"device: {device} ({info.get('device_type', '?')}, {info.get('torch_threads', '?')} torch threads)",
        "copy bandwidth (dst.copy_(src), read+write, measured in this run): "
        + (f"{copy_bw:.1f} GB/s" if copy_bw else "not measured"),
        f"torch {info.get('torch', '?')}, deepfast {info.get('version', '?')}, "
        f"benchmarked backends: {', '.join(info.get('benchmarked_backends', [])) or 'none'}",
        f"date: {data.get('datetime', '?')}",
    ]
    commit = data.get("commit_info", {})
    if commit.get("id"):
        lines.append(f"commit: {commit['id'][:12]}" + (" (dirty tree)" if commit.get("dirty") else ""))
    for key, value in extra.items():
        lines.append(f"{key}: {value}")
    return lines


def write_outputs(out_dir: str, json_path: str, data: dict, rows: list[dict], header: list[str]) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(data, f, indent=2)
    fields = [
        "op", "shape", "dtype", "mode", "impl", "median_ms", "min_ms", "mean_ms", "stddev_ms", "iqr_ms", "rounds",
        "iterations", "bytes", "gbps", "pct_copy", "vs_eager", "vs_compile", "saved_mb", "copy_bandwidth_gbps", "device",
        "test",
    ]  # fmt: skip
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    md = io.StringIO()
    md.write("# deepfast benchmarks\n\n")
    md.writelines(f"- {line}\n" for line in header)
    md.write("\n" + markdown_table(rows) + "\n")
    for note in notes(rows):
        md.write(f"\nNote: {note}\n")
    md.write(
        "\nGB/s: the least bytes the op must read and write / median time. "
        "% copy BW: that over the copy bandwidth above. vs eager / vs compile: time of the eager / "
        "torch.compile row of the same op, shape and mode over the time of this row (>1: faster)."
        + (
            " saved MB: bytes autograd saves for backward in one step (activation memory), parameters left out."
            if any(r["saved_mb"] is not None for r in rows)
            else ""
        )
        + "\n"
    )
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(md.getvalue())


# --- main -------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    busy = wait_until_idle(args.wait_idle, args.busy_threshold) if args.wait_idle > 0 else cpu_busy_percent()
    if busy is not None and busy > args.busy_threshold:
        print(
            f"warning: the CPUs were {busy:.0f}% busy before the run (other processes); timings will be noisy",
            file=sys.stderr,
        )
    tmp = None
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        json_path = os.path.join(os.path.abspath(args.out), "results.raw.json")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="deepfast-bench-")
        json_path = os.path.join(tmp.name, "results.json")
    cmd = pytest_command(args, json_path)
    print("+ " + shlex.join(cmd), flush=True)
    start, cpu0, own0 = time.perf_counter(), cpu_times(), os.times()
    rc = subprocess.call(cmd, cwd=ROOT)
    wall, cpu1, own1 = time.perf_counter() - start, cpu_times(), os.times()
    others = None  # % of the machine's CPU time used by other processes during the run
    if cpu0 and cpu1 and cpu1[1] > cpu0[1]:
        own = (own1.children_user + own1.children_system) - (own0.children_user + own0.children_system)
        others = max(0.0, 100.0 * ((cpu1[0] - cpu0[0]) - own) / (cpu1[1] - cpu0[1]))
    if others is not None and others > args.busy_threshold:
        print(
            f"warning: other processes used {others:.0f}% of the CPUs during the run; these timings are not reliable",
            file=sys.stderr,
        )
    try:
        if not os.path.exists(json_path):
            print(f"error: pytest (exit status {rc}) wrote no benchmark results", file=sys.stderr)
            return rc or 1
        with open(json_path) as f:
            data = json.load(f)
        rows = rows_from(data)
        extra = {
            "command": shlex.join(
                [
                    os.path.relpath(sys.argv[0], ROOT) if argv is None else "benchmarks/run.py",
                    *(sys.argv[1:] if argv is None else argv),
                ]
            ),
            "pytest wall time": f"{wall:.0f} s",
            "CPU busy before the run": "?" if busy is None else f"{busy:.0f}%",
            "CPU used by other processes during the run": "?" if others is None else f"{others:.0f}%",
        }
        header = header_lines(data, rows, extra)
        print()
        print("\n".join(header))
        print()
        print(text_table(rows) if rows else "(no benchmarks ran)")
        for note in notes(rows):
            print(f"\nnote: {note}")
        if args.out:
            write_outputs(args.out, json_path, data, rows, header)
            os.remove(json_path)  # kept as results.json
            print(
                f"\nwrote {', '.join(os.path.join(args.out, n) for n in ('results.json', 'results.csv', 'table.md'))}"
            )
        if rc != 0:
            print(f"\nerror: pytest exit status {rc}", file=sys.stderr)
        elif not rows:
            return 1
        return rc
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
