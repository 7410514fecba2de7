"""`make triton-check` (.ci/triton_check.py) finds what the Triton interpreter hides.

Each check is shown to fire on a small kernel that has the defect and to stay quiet on one that does
not, and reverting one of the fixes in kernels/norm_leaky_relu.py makes the check fail. The kernels compile for
sm_90 in a subprocess: the test session runs Triton in its interpreter, where nothing compiles.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / ".ci"

TOY = """
import torch
import triton
import triton.language as tl

SCALE = 2.0


@triton.jit
def clean(x_ptr, n: tl.int64, scale: tl.float64, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(x_ptr + offs, tl.where(x > 0, x, x * tl.full([], scale, x.dtype)), mask=offs < n)


@triton.jit
def module_global(x_ptr, n: tl.int64, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * SCALE, mask=offs < n)


@triton.jit
def float_scalar(x_ptr, n: tl.int64, scale, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * scale, mask=offs < n)


@triton.jit
def int32_sizes(x_ptr, rows, cols, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * rows * cols + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs) + 1.0)


@triton.jit
def nan_dropping(x_ptr, n: tl.int64, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.maximum(tl.load(x_ptr + offs, mask=offs < n), 0.0), mask=offs < n)


@triton.jit
def naive_exp(x_ptr, n: tl.int64, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + offs, tl.exp(tl.load(x_ptr + offs, mask=offs < n)), mask=offs < n)


x32, x64 = torch.zeros(100), torch.zeros(100, dtype=torch.float64)
CALLS = {
    "clean": [(clean[(1,)], (x64, 100, 0.2), dict(BLOCK=128)), (clean[(1,)], (x32, 100, 0.2), dict(BLOCK=128))],
    "module_global": [(module_global[(1,)], (x32, 100), dict(BLOCK=128))],
    "float_scalar": [(float_scalar[(1,)], (x64, 100, 0.2), dict(BLOCK=128))],
    "int32_sizes": [(int32_sizes[(1,)], (x32, 10, 10), dict(BLOCK=128))],
    "nan_dropping": [(nan_dropping[(1,)], (x32, 100), dict(BLOCK=128))],
    "naive_exp": [(naive_exp[(1,)], (x32, 100), dict(BLOCK=128))],
}
"""

DRIVER = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import triton_check
import {module} as m
calls = {calls}
launches = triton_check.record([(name, lambda f=f, a=a, k=k: f(*a, **k), ()) for name, f, a, k in calls])
print(json.dumps({{launch.name: triton_check.compile_one(launch, 90)["problems"] for launch in launches}}))
"""


def problems(tmp_path: Path, module: str, calls: str) -> dict[str, list[str]]:
    """{kernel name: problems} of the launches ``calls`` makes, a Python expression over module ``m``."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, "-c", DRIVER.format(module=module, calls=calls), str(CI), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_each_check_fires_on_its_defect_and_only_there(tmp_path):
    (tmp_path / "toy.py").write_text(TOY)
    calls = "[(n, f, a, k) for n, cs in m.CALLS.items() for f, a, k in cs]"
    found = problems(tmp_path, "toy", calls)
    assert found["clean"] == []
    assert any("Cannot access global variable" in p for p in found["module_global"]), found["module_global"]
    assert any(p.startswith("f64-scalar: argument scale is fp32") for p in found["float_scalar"])
    assert any(p.startswith("i32-size: argument rows is i32") for p in found["int32_sizes"])
    assert any(p.startswith("i32-size: a computed 32-bit offset") for p in found["int32_sizes"])
    assert any(p.startswith("nan-minmax: arith.maxnumf") for p in found["nan_dropping"])
    assert any(p.startswith("approx-exp") for p in found["naive_exp"])


# The batch-statistics forward of a float64 (2, 3, 5, 7) tensor: the three norm_leaky_relu kernels, once each.
FORWARD = (
    "[('forward', m.forward, (__import__('torch').randn(2, 3, 5, 7, dtype=__import__('torch').float64), None, "
    "None, None, None, (1, 2, 3, 35), 1e-5, 0.2, False), {})]"
)

# fix: ([(text of the fix, the text it replaced)], the problem the check then reports)
REVERTS = {
    "1-constexpr-globals": (
        [
            (
                "STATS, FROM_X, FROM_Y, GIVEN = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2), tl.constexpr(3)",
                "STATS, FROM_X, FROM_Y, GIVEN = 0, 1, 2, 3",
            ),
            ("MODE=mode.value", "MODE=mode"),
        ],
        "Cannot access global variable",
    ),
    "2-float64-scalars": ([("eps: tl.float64", "eps"), ("slope: tl.float64", "slope")], "f64-scalar"),
    "6-int64-sizes": ([(": tl.int64", "")], "i32-size"),
}


@pytest.mark.parametrize("fix", list(REVERTS))
def test_reverting_a_fix_of_norm_leaky_relu_fails_the_check(tmp_path, fix):
    replacements, expected = REVERTS[fix]
    source = (ROOT / "kernels" / "norm_leaky_relu.py").read_text()
    for old, new in replacements:
        assert old in source, f"kernels/norm_leaky_relu.py no longer contains {old!r}: update this test"
        source = source.replace(old, new)
    (tmp_path / "reverted_norm_leaky_relu.py").write_text(source)
    found = problems(tmp_path, "reverted_norm_leaky_relu", FORWARD)
    assert set(found) == {"_sums_kernel", "_finish_kernel", "_apply_kernel"}
    assert any(expected in p for ps in found.values() for p in ps), found


def test_the_kernels_as_they_are_pass(tmp_path):
    found = problems(tmp_path, "deepfast.kernels.norm_leaky_relu", FORWARD)
    assert found == {"_sums_kernel": [], "_finish_kernel": [], "_apply_kernel": []}


def test_unguarded_launch_is_found(tmp_path):
    sys.path.insert(0, str(CI))
    try:
        from sass import local_traffic
    finally:
        sys.path.remove(str(CI))
    (tmp_path / "k.py").write_text("def f(x):\n    with on_device(x):\n        a[(1,)](x)\n    b[(1,)](x)\n")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; import triton_check; "
        "print(triton_check.unguarded_launches(Path(sys.argv[2])))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(CI), str(tmp_path)], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert "k.py:4" in out and "k.py:3" not in out
    sass = """
        arch = sm_90
        Function : kern
        /*0000*/                   STL [R1], R6 ;
        /*0010*/                   LDG.E R2, [R4.64] ;
        /*0020*/                   STL.64 [R1+0x8], R4 ;
        /*0030*/              @!P0 BRA 0x10 ;
        /*0040*/                   EXIT ;
    """
    assert local_traffic(sass) == {("kern", "sm_90"): (1, 1)}
