"""deepfast.hardware: the CPU's model, ISA and bf16 support as the OS and torch report them."""

import os
import subprocess
import sys
import types
import warnings

import pytest

from deepfast import backends, hardware


def test_isa_from_flags(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"sse2", "avx2", "avx512f", "amx_tile"}))
    assert hardware.cpu_isa() == ["AVX2", "AVX-512", "AMX"]
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"sse2"}))
    assert hardware.cpu_isa() == []
    assert "no AVX2" in hardware.describe()


def test_describe_names_the_cpu_and_torch_isa():
    line = hardware.describe()
    assert hardware.cpu_model() in line and hardware.torch_isa() in line
    assert ("bf16 native" in line) == hardware.bf16_native()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
def test_environment_lowers_torch_isa():
    """ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA make an AVX-512 machine report what an AVX2 one does."""
    code = "from deepfast import hardware; print(hardware.torch_isa(), hardware.bf16_native())"
    env = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["AVX2", "False"]


def test_kernel_clone_from_flags(monkeypatch):
    v3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
    v4 = v3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    monkeypatch.setattr(hardware.platform, "machine", lambda: "x86_64")
    full = types.SimpleNamespace(cpu_clones=("x86-64-v4", "x86-64-v3", "default"))
    avx2 = types.SimpleNamespace(cpu_clones=("x86-64-v3", "default"))  # a DEEPFAST_CPU_ISA=avx2 build
    for built, flags, clone in (
        (full, v4, "x86-64-v4 (AVX-512)"),
        (full, v3, "x86-64-v3 (AVX2)"),
        (full, v3 - {"fma"}, "baseline x86-64"),
        (full, {"avx512f"}, "baseline x86-64"),
        (avx2, v4, "x86-64-v3 (AVX2)"),
        (avx2, v3, "x86-64-v3 (AVX2)"),
    ):
        monkeypatch.setattr(backends, "extension", built)
        monkeypatch.setattr(hardware, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert hardware.kernel_isa() == clone
    monkeypatch.setattr(hardware.platform, "machine", lambda: "aarch64")
    assert hardware.kernel_isa().startswith("baseline (aarch64")


@pytest.fixture
def fresh_amp_check(monkeypatch):
    """deepfast.amp as if no autocast had run in this process yet."""
    from deepfast import amp

    monkeypatch.setattr(amp, "_checked", set())
    return amp


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_emulated_amp_warns_once_naming_the_cpu(monkeypatch, fresh_amp_check, name):
    amp = fresh_amp_check
    monkeypatch.setattr(hardware, "bf16_native", lambda: False)
    monkeypatch.setattr(hardware, "fp16_native", lambda: False)
    monkeypatch.setattr(hardware, "cpu_model", lambda: "Test CPU 3000")
    with pytest.warns(
        amp.EmulatedAmpWarning, match=rf"amp='{name}' on Test CPU 3000 .*emulates it.*slower than float32"
    ):
        with amp.autocast("cpu", name):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):  # once per process
            with amp.autocast("cpu", name):
                pass
        with amp.autocast("cpu", None):
            pass


def test_native_amp_and_other_devices_do_not_warn(monkeypatch, fresh_amp_check):
    amp = fresh_amp_check
    monkeypatch.setattr(hardware, "bf16_native", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        amp.warn_if_emulated("cpu", "bf16")
        amp.warn_if_emulated("cpu", None)
        amp.warn_if_emulated("cuda", "fp16")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="oneDNN's ISA limit")
def test_attack_and_training_warn_where_onednn_reports_no_bf16(tmp_path):
    """ONEDNN_MAX_CPU_ISA=AVX2 makes oneDNN report no native bf16 (as on a Zen 3): PGD(amp="bf16") and
    `deepfast train --amp bf16` each warn once, naming the CPU."""
    code = """
import warnings, torch
from torch import nn
from deepfast import cli
from deepfast.attacks import PGD
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as seen:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    PGD(model, 0.1, steps=3, amp="bf16")(torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0]))
    PGD(model, 0.1, steps=3, amp="bf16")(torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0]))
print(sum(w.category.__name__ == "EmulatedAmpWarning" for w in seen))
print(seen[0].message)
"""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    count, message = run.stdout.splitlines()[:2]
    assert count == "1" and f"amp='bf16' on {hardware.cpu_model()}" in message
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "deepfast",
            "train",
            "classifier",
            "--epochs",
            "1",
            "--max-batches",
            "1",
            "--batch-size",
            "16",
            "--amp",
            "bf16",
            "--no-progress",
            "--sample-every",
            "0",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "run"),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert train.stderr.count("EmulatedAmpWarning") == 1 and hardware.cpu_model() in train.stderr


def test_info_says_which_kernels_and_autocast_paths_are_native(capsys):
    from deepfast import cli

    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"deepfast C++ kernels on this CPU: the {hardware.kernel_isa()} clone" in out
    native = hardware.autocast_support()
    for name in ("bf16", "fp16"):
        assert f"{name} {'native' if native[name] else 'emulated'}" in out


def test_compile_cache_is_kept_apart_under_a_lower_torch_isa(monkeypatch):
    """torch.compile's cache key leaves ATEN_CPU_CAPABILITY out (a kernel cached under avx2 crashed a later
    run without it): under the variable, the cache goes to a folder of that capability; a folder the user
    set is kept, and without the variable nothing changes. `import deepfast` does it."""
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    hardware.separate_compile_cache()
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    hardware.separate_compile_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"].endswith("-aten-avx2")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/mine")
    hardware.separate_compile_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/mine"
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    code = "import os, deepfast; print(os.environ['TORCHINDUCTOR_CACHE_DIR'])"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("-aten-avx2")


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="busy_cpus samples /proc/stat (Linux)")
def test_busy_cpus_counts_a_spinning_process():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = hardware.busy_cpus(0.5)
    finally:
        spin.kill()
        spin.wait()
    assert 0.8 <= busy <= os.cpu_count()


def test_busy_cpus_falls_back_to_the_load_average(monkeypatch):
    def no_proc(*args, **kwargs):
        raise OSError("no /proc")

    monkeypatch.setattr("builtins.open", no_proc)
    monkeypatch.setattr("os.getloadavg", lambda: (1.5, 1.0, 1.0))
    assert hardware.busy_cpus(0.01) == 1.5
