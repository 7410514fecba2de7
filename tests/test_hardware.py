"""deepfast.hardware: the CPU's model, ISA and bf16 support as the OS and torch report them."""

import os
import subprocess
import sys

import pytest

from deepfast import hardware


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
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["AVX2", "False"]
