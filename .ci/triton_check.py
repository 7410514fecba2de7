"""`make triton-check`: every Triton kernel of deepfast.kernels compiled for real GPUs, with no GPU.

The Triton interpreter (TRITON_INTERPRET=1, which the CPU tests use) accepts code that real
compilation rejects and computes float scalars in float64 where a GPU gets float32. This check runs
every wrapper of deepfast.kernels on CPU tensors with a stand-in driver: Triton binds and specializes
each launch as it would on a GPU, and a hook records the specialization instead of launching. Each
distinct specialization (dtypes, constexprs, alignment) is compiled with ``triton.compile`` for sm_80
and sm_90, and the generated code is inspected for what the interpreter hides:

  f64-scalar   a float64 specialization with a float32 scalar argument, or a cvt.f64.f32 in its PTX
  i32-size     an integer argument that is not int64, or a tt.addptr with 32-bit offsets (TTIR)
  nan-minmax   a min / max that drops NaN (arith.minnumf / maxnumf; torch propagates NaN)
  approx-exp   exp as ex2.approx of x * log2(e) rounded once (tl.exp; 4e-6 off at |x| = 85)
  spill        a local load / store (LDL / STL: a spill) inside a loop of the SASS (cuobjdump -sass; .ci/sass.py);
               those outside loops (registers saved around the slow path of a division, once per
               program) are counted in the report
  unguarded    a launch outside ``with on_device(...)`` (it would run on the current device, not the
               tensors'; a static check of the kernels' source)

    python .ci/triton_check.py [--jobs N] [--arch 80,90] [--only NAME] [--report FILE]

Exit status 1 when a kernel fails to compile or shows any of the above.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # JITFunction, not the interpreter

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / ".ci"))
from sass import local_traffic  # noqa: E402

KERNELS = ROOT / "kernels"
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclasses.dataclass(frozen=True)
class Launch:
    """One specialization of one kernel, as Triton would compile it."""

    module: str
    name: str
    signature: tuple[tuple[str, str], ...]
    constexprs: tuple  # ((path, value), ...); dtypes as their names
    attrs: tuple
    num_warps: int
    num_stages: int

    def label(self) -> str:
        consts = ", ".join(f"{self.signature[p[0]][0]}={v}" for p, v in self.constexprs if v is not None)
        types = ",".join(t for _, t in self.signature if t != "constexpr")
        return f"{self.name}[{consts}]({types})"

    def is_float64(self) -> bool:
        return any(t == "*fp64" for _, t in self.signature)


# --- recording the launches of the wrappers --------------------------------------------------------


class _StandInDriver:
    """What JITFunction.run asks of the active driver before it compiles: a CUDA target, a device, a stream."""

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")


def _freeze(value):
    if isinstance(value, tl.dtype):
        return f"dtype:{value.name}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def record(calls: list[tuple[str, Callable, tuple]]) -> dict[Launch, str]:
    """The distinct launches made by ``calls`` (name, fn, args), each with the name of the first call that made it."""
    from triton import knobs
    from triton.runtime.driver import driver

    seen: dict[Launch, str] = {}
    current = [""]

    def hook(*, key, repr, fn, compile, is_manual_warmup, already_compiled):
        jit = fn.jit_function
        sig = compile["signature"]
        launch = Launch(
            module=jit.fn.__module__,
            name=jit.fn.__name__,
            signature=tuple(sig.items()),
            constexprs=tuple(sorted((k, _freeze(v)) for k, v in compile["constants"].items())),
            attrs=tuple(sorted((k, tuple(tuple(a) for a in v)) for k, v in compile["configs"][0].items())),
            num_warps=compile["num_warps"],
            num_stages=compile["num_stages"],
        )
        seen.setdefault(launch, current[0])
        return True  # skip compiling and launching

    previous, previous_driver = knobs.runtime.jit_cache_hook, driver._active
    driver.set_active(_StandInDriver())
    knobs.runtime.jit_cache_hook = hook
    try:
        for name, fn, args in calls:
            current[0] = name
            fn(*args)
    finally:
        knobs.runtime.jit_cache_hook = previous
        driver._active = previous_driver  # reset_active() would look for a real GPU
    return seen


def _t(shape, dtype, channels_last=False):
    x = torch.randn(shape).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def wrapper_calls() -> Iterator[tuple[str, Callable, tuple]]:
    """(name, wrapper, args): every mode of every wrapper in deepfast.kernels, for every dtype, at sizes that
    reach each block configuration the wrappers derive from the sizes (the smallest and the largest of each)."""
    from deepfast.kernels import cycle_l1, norm_leaky_relu, pgd_step, reparameterize_kl
    from deepfast.ops.norm_leaky_relu import layout

    for dtype in DTYPES:
        d = str(dtype).removeprefix("torch.")
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        one = torch.ones((), dtype=dtype)
        for shape in [(37, 53), (5,)]:
            mu, lv, eps = (_t(shape, dtype) for _ in range(3))
            for reduce in (True, False):
                yield (
                    f"reparameterize_kl.forward {d} reduce={reduce}",
                    reparameterize_kl.forward,
                    (mu, lv, eps, reduce, 0.5),
                )
            yield f"reparameterize_kl.backward {d} reduced", reparameterize_kl.backward, (mu, one, mu, lv, eps, 0.5)
            yield f"reparameterize_kl.backward {d}", reparameterize_kl.backward, (mu, mu, mu, lv, eps, 1.0)
        rec, orig = _t((2, 3, 7, 5), dtype), _t((2, 3, 7, 5), dtype)
        yield f"cycle_l1.forward {d}", cycle_l1.forward, (rec, orig, 0.1)
        for mask in ([True, True], [True, False], [False, True]):
            yield f"cycle_l1.backward {d} {mask}", cycle_l1.backward, (one, rec, orig, 0.1, mask)
        for shape in [(3, 2, 5, 7), (2, 1), (1, 3, 130, 130), (300, 3, 33, 33)]:
            x, g, x0 = (_t(shape, dtype) for _ in range(3))
            per = torch.full((shape[0],), 0.1, dtype=acc)
            for norm in ("inf", "2"):
                for inplace in (False, True):
                    yield (
                        f"pgd_step.step {d} {shape} {norm} inplace={inplace}",
                        pgd_step.step,
                        (x.clone(), g, x0, per, per, norm, 0.0, 1.0, inplace),
                    )
        # norm_leaky_relu: NCHW rows (S = 35), short rows (S = 2), long rows in segments (S > CHUNK), columns
        # (channels_last, C = 3 and C = 200), each mode, with and without weight / bias, in-place or not
        for shape, cl in [
            ((2, 3, 5, 7), False),
            ((3, 4, 1, 2), False),
            ((1, 2, 131, 131), False),
            ((2, 3, 5, 7), True),
            ((2, 200, 2, 3), True),
        ]:
            x = _t(shape, dtype, cl)
            c = shape[1]
            w, b = _t((c,), dtype), _t((c,), dtype)
            rm, rv = torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)
            for instance in (False, True):
                lay = layout(x, instance)
                dense = x.contiguous(memory_format=lay.memory_format)
                shp = tuple(lay[:4])
                mean, var = torch.zeros(lay.B * c, dtype=acc), torch.ones(lay.B * c, dtype=acc)
                for wb, inplace in [((w, b), False), ((w, b), True), ((None, None), False)]:
                    tag = f"norm_leaky_relu {d} {shape}{' cl' if cl else ''} instance={instance} affine={wb[0] is not None}"
                    yield (
                        f"{tag} forward inplace={inplace}",
                        norm_leaky_relu.forward,
                        (dense, *wb, None, None, shp, 1e-5, 0.2, inplace),
                    )
                    if not instance:
                        yield (
                            f"{tag} forward eval inplace={inplace}",
                            norm_leaky_relu.forward,
                            (dense, *wb, rm, rv, shp, 1e-5, 0.2, inplace),
                        )
                    for batch_stats in (True, False):
                        yield (
                            f"{tag} backward inplace={inplace} batch_stats={batch_stats}",
                            norm_leaky_relu.backward,
                            (dense, dense, *wb, mean, var, shp, batch_stats, 1e-5, 0.2, inplace),
                        )


# --- compiling and inspecting ---------------------------------------------------------------------------


def _thaw(value):
    if isinstance(value, str) and value.startswith("dtype:"):
        return tl.dtype(value.removeprefix("dtype:"))
    return value


def _cuobjdump() -> str | None:
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(bundled) if bundled.is_file() else None


def compile_one(launch: Launch, arch: int) -> dict:
    """Compiles ``launch`` for sm_<arch>; returns {"problems": [...], "regs": int|None, "seconds": float}."""
    fn = getattr(importlib.import_module(launch.module), launch.name)
    src = ASTSource(
        fn,
        dict(launch.signature),
        {k: _thaw(v) for k, v in launch.constexprs},
        {k: [list(a) for a in v] for k, v in launch.attrs},
    )
    start = time.perf_counter()
    try:
        kernel = triton.compile(
            src,
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": launch.num_warps, "num_stages": launch.num_stages},
        )
    except Exception as exc:  # noqa: BLE001 - the compile error is the finding
        message = [line for line in str(exc).strip().splitlines() if line.strip()]
        return {
            "problems": [f"compile: {message[-1][:300] if message else type(exc).__name__}"],
            "regs": None,
            "seconds": 0.0,
        }
    result = inspect_code(launch, kernel.asm)
    result["seconds"] = time.perf_counter() - start
    return result


_DEF = re.compile(r"^\s*(%[\w.#]+) = ([\w.]+) (%[\w.#]+)?")
_ADDPTR = re.compile(r"tt\.addptr %[\w.#]+, (%[\w.#]+) : .*, (?:tensor<[0-9x]*(i\d+)>|(i\d+))")
_SHAPE_OPS = ("tt.splat", "tt.broadcast", "tt.expand_dims", "tt.reshape")


def narrow_offsets(ttir: str) -> list[str]:
    """tt.addptr lines whose offset is narrower than 64 bits and comes from a computation: an offset that
    is a tl.arange or a constant (through splat / broadcast / expand_dims) is bounded by the block."""
    defs = {m[1]: (m[2], m[3]) for m in map(_DEF.match, ttir.splitlines()) if m}
    found = []
    for line in ttir.splitlines():
        m = _ADDPTR.search(line)
        if not m or (m[2] or m[3]) == "i64":
            continue
        name = m[1]
        while defs.get(name, ("", None))[0] in _SHAPE_OPS:
            name = defs[name][1]
        if defs.get(name, ("", None))[0] not in ("tt.make_range", "arith.constant"):
            found.append(line.strip()[:160])
    return found


_NAIVE_EXP = re.compile(r"mul(?:\.rn)?\.f32\s+(%r\d+), %r\d+, 0f3FB8AA3B;")
_RESOURCES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def inspect_code(launch: Launch, asm: dict) -> dict:
    """The problems (see the module docstring) in the TTIR, PTX and cubin of one compiled kernel."""
    problems = []
    scalars = [(name, t) for name, t in launch.signature if not t.startswith("*") and t != "constexpr"]
    if launch.is_float64():
        problems += [f"f64-scalar: argument {name} is {t} in a float64 kernel" for name, t in scalars if t == "fp32"]
        if "cvt.f64.f32" in asm["ptx"]:
            problems.append("f64-scalar: cvt.f64.f32 in the PTX of a float64 kernel")
    problems += [
        f"i32-size: argument {name} is {t} (sizes must be int64)"
        for name, t in scalars
        if t.startswith(("i", "u")) and t not in ("i64", "i1")
    ]
    narrow = narrow_offsets(asm["ttir"])
    if narrow:
        problems.append(f"i32-size: a computed 32-bit offset: {narrow[0]}")
    for op in ("arith.maxnumf", "arith.minnumf"):
        if op in asm["ttir"]:
            problems.append(f"nan-minmax: {op} drops NaN (use propagate_nan=tl.PropagateNan.ALL or tl.where)")
    ptx = asm["ptx"]
    for reg in _NAIVE_EXP.findall(ptx):
        if re.search(rf"ex2\.approx(?:\.ftz)?\.f32\s+%r\d+, {reg};", ptx):
            problems.append("approx-exp: ex2.approx of x * log2(e) rounded once (tl.exp): use libdevice.exp")
            break
    regs, outside = None, 0
    tool = _cuobjdump()
    if tool is not None:
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(asm["cubin"])
            f.flush()
            usage = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
            sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
        m = _RESOURCES.search(usage)
        if m:
            regs = int(m[1])
        traffic = list(local_traffic(sass).values())
        inside, outside = (sum(t[i] for t in traffic) for i in (0, 1))
        if inside:
            problems.append(f"spill: {inside} local loads / stores inside loops (stack {m[2] if m else '?'} bytes)")
    return {"problems": problems, "regs": regs, "local_outside_loops": outside if tool else None}


def unguarded_launches(folder: Path = KERNELS) -> list[str]:
    """Launches ``kernel[grid](...)`` in folder/*.py that are not inside ``with on_device(...)``."""
    found = []
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        guarded: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.With) and any(
                isinstance(item.context_expr, ast.Call) and getattr(item.context_expr.func, "id", "") == "on_device"
                for item in node.items
            ):
                guarded |= {id(n) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript) and id(node) not in guarded:
                found.append(f"unguarded: {path.name}:{node.lineno}: a launch outside `with on_device(...)`")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--arch", default="80,90", help="compute capabilities to compile for (default 80,90)")
    parser.add_argument("--only", default="", help="only kernels whose name contains this")
    parser.add_argument("--report", default="", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    archs = [int(a) for a in args.arch.split(",")]
    start = time.perf_counter()
    launches = {k: v for k, v in record(list(wrapper_calls())).items() if args.only in f"{k.module}.{k.name}"}
    print(
        f"triton-check: triton {triton.__version__}, torch {torch.__version__}; {len(launches)} specializations "
        f"of {len({(k.module, k.name) for k in launches})} kernels, for sm_{', sm_'.join(map(str, archs))}",
        flush=True,
    )
    jobs = [(launch, arch) for launch in launches for arch in archs]
    results = {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(compile_one, launch, arch): (launch, arch) for launch, arch in jobs}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            launch, arch = futures[future]
            results[(launch, arch)] = future.result()
            if done % 50 == 0 or done == len(jobs):
                print(f"  compiled {done}/{len(jobs)} ({time.perf_counter() - start:.0f} s)", flush=True)
    failures = unguarded_launches()
    rows = []
    for (launch, arch), res in sorted(
        results.items(), key=lambda kv: (kv[0][0].module, kv[0][0].name, kv[0][0].label(), kv[0][1])
    ):
        rows.append(
            {
                "kernel": f"{launch.module}.{launch.name}",
                "specialization": launch.label(),
                "arch": arch,
                "registers": res["regs"],
                "local_outside_loops": res.get("local_outside_loops"),
                "problems": res["problems"],
                "from": launches[launch],
            }
        )
        failures += [f"{launch.label()} sm_{arch} (from {launches[launch]}): {p}" for p in res["problems"]]
    by_kernel: dict[str, list[dict]] = {}
    for row in rows:
        by_kernel.setdefault(row["kernel"], []).append(row)
    print(f"\n{'kernel':<45} {'specializations':>15} {'registers (max)':>16} {'local ld/st outside loops':>26}")
    for kernel, krows in by_kernel.items():
        regs = max(r["registers"] or 0 for r in krows)
        outside = sum(r["local_outside_loops"] or 0 for r in krows)
        spilling = sum(bool(r["local_outside_loops"]) for r in krows)
        print(f"{kernel:<45} {len(krows) // len(archs):>15} {regs:>16} {f'{outside} in {spilling} builds':>26}")
    if args.report:
        Path(args.report).write_text(json.dumps({"triton": triton.__version__, "rows": rows}, indent=1))
    print(f"\n{len(rows)} compiles in {time.perf_counter() - start:.0f} s")
    shown: dict[str, int] = {}  # the first of each kind of problem per kernel, and how often it occurs
    for line in failures:
        key = re.sub(r"\[.*?\]\(.*?\) sm_\d+ \(from .*?\)|%[\w.#]+|\d+", "", line)
        shown[key] = shown.get(key, 0) + 1
        if shown[key] == 1:
            print(f"FAIL {line}")
    repeats = sum(n - 1 for n in shown.values())
    if repeats:
        print(f"({repeats} more of the same kinds in other specializations; --report FILE lists them all)")
    print("triton-check: " + (f"FAILED ({len(failures)} problems)" if failures else "OK"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
