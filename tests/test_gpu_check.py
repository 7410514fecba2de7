"""The GPU runbook (benchmarks/gpu_check.sh) checked without a GPU: its dry run prints every step and
checks what the steps need (the test groups and the cuda tests collect, each headline benchmark row
exists)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def dry_run(*steps: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", *steps], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600
    )


def test_syntax():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_dry_run_of_the_essential_pass_and_the_rest():
    out = dry_run("build", "tests", "sanitize", "bench", "rest")
    assert out.returncode == 0, out.stdout + out.stderr
    for words in (
        "pip install --no-build-isolation",
        "-k cuda tests/test_norm_leaky_relu.py",
        "-m cuda tests",
        "compute-sanitizer --tool memcheck",
        "compute-sanitizer --tool racecheck",
        "256x64x56x56",
        "test_attack_pgd_resnet18",
        "[rest-tests",
        "dry run: OK",
    ):
        assert words in out.stdout, words
    assert "FAIL" not in out.stdout


def test_dry_run_refuses_an_unknown_step():
    out = dry_run("bild")
    assert out.returncode != 0 and "unknown step bild" in out.stdout
