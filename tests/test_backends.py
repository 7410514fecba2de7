"""Backend choice: automatic per device, forced by use_backend() or DEEPFAST_BACKEND, clear errors."""

import os
import subprocess
import sys

import pytest
import torch

import deepfast
from deepfast import backends


def test_torch_backend_always_available():
    assert backends.status()["torch"].available
    assert set(backends.status()) == set(backends.BACKENDS)


def test_every_missing_backend_says_why():
    for name, status in backends.status().items():
        assert status.detail, name


def test_automatic_choice_prefers_compiled_kernels():
    expected = "cpp" if backends.status()["cpp"].available else "torch"
    assert backends.select(torch.device("cpu")) == expected
    assert backends.select(torch.device("meta")) == "torch"


def test_use_backend_forces_and_restores():
    before = backends.select(torch.device("cpu"))
    with deepfast.use_backend("torch"):
        assert backends.select(torch.device("cpu")) == "torch"
        with deepfast.use_backend("auto"):
            assert backends.select(torch.device("cpu")) == before
    assert backends.select(torch.device("cpu")) == before


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match="use_backend must be one of torch, cpp, cuda, triton"):
        with deepfast.use_backend("fortran"):
            pass


@pytest.mark.skipif(torch.cuda.is_available(), reason="the cuda backend is available on this machine")
def test_unavailable_backend_says_why():
    with pytest.raises(deepfast.BackendUnavailable, match="backend 'cuda' .* is not available: .+"):
        with deepfast.use_backend("cuda"):
            pass


@pytest.mark.skipif(backends.extension is None, reason="deepfast._C not built")
def test_backend_on_wrong_device_is_an_error():
    with deepfast.use_backend("cpp"), pytest.raises(deepfast.BackendUnavailable, match="cannot run tensors on meta"):
        deepfast.reparameterize_kl(torch.zeros(2, device="meta"), torch.zeros(2, device="meta"))


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


def test_environment_variable_forces_backend():
    code = "import torch, deepfast; print(deepfast.backends.select(torch.device('cpu')))"
    assert run_python(code, DEEPFAST_BACKEND="torch").stdout.strip() == "torch"
    bad = run_python(
        "import torch, deepfast; deepfast.reparameterize_kl(torch.zeros(2), torch.zeros(2))", DEEPFAST_BACKEND="fortran"
    )
    assert bad.returncode != 0 and "DEEPFAST_BACKEND must be one of" in bad.stderr


def test_info_command_lists_backends():
    out = subprocess.run([sys.executable, "-m", "deepfast", "info"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in backends.BACKENDS:
        assert f"\n{name} " in out.stdout
    assert "cpu tensors run on:" in out.stdout
