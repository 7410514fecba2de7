"""Both install modes ship deepfast.kernels (the top-level kernels/), py.typed and _C.pyi, and import cleanly."""

import ast
import os
import pathlib
import site
import subprocess
import sys

import pytest

import deepfast
from deepfast import backends

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_kernels_package_in_this_install():
    import deepfast.kernels.reparameterize_kl as k

    origin = pathlib.Path(k.__file__).resolve()
    if pathlib.Path(deepfast.__file__).resolve().is_relative_to(REPO):  # editable install or source tree
        assert origin == REPO / "kernels" / "reparameterize_kl.py"
    else:
        assert origin.parent.name == "kernels" and origin.parent.parent.name == "deepfast"


@pytest.mark.slow
def test_regular_pure_python_install(tmp_path):
    """`DEEPFAST_NO_EXT=1 pip install .`: no extension; import works, the torch backend serves, info says why."""
    target = tmp_path / "site"
    env = {**os.environ, "DEEPFAST_NO_EXT": "1", "PIP_NO_INPUT": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-build-isolation",
            "--no-deps",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        env=env,
        timeout=300,
        capture_output=True,
    )
    code = """
import pathlib, sys, torch, deepfast, deepfast.attacks, deepfast.data, deepfast.kernels
site = pathlib.Path(sys.argv[1]).resolve()
assert pathlib.Path(deepfast.__file__).resolve().is_relative_to(site), deepfast.__file__
assert pathlib.Path(deepfast.kernels.__file__).resolve() == site / "deepfast" / "kernels" / "__init__.py"
assert pathlib.Path(deepfast.data.__file__).resolve() == site / "deepfast" / "data" / "__init__.py"
assert (site / "deepfast" / "py.typed").is_file() and (site / "deepfast" / "_C.pyi").is_file()  # typed (PEP 561)
assert deepfast.backends.extension is None
assert deepfast.backends.select(torch.device("cpu")) == "torch"
z, kl = deepfast.reparameterize_kl(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3))
assert torch.equal(z, torch.ones(2, 3)) and kl.item() == 0.0
assert pathlib.Path(deepfast.attacks.__file__).resolve() == site / "deepfast" / "attacks" / "__init__.py"
x = torch.rand(3, 1, 2, 2)
adv = deepfast.attacks.PGD(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)), eps=0.1)(x, torch.arange(3))
assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1  # the torch backend's step
"""
    # -S skips the .pth files, so the editable install of this environment cannot serve deepfast._C.
    path = os.pathsep.join([str(target), *site.getsitepackages()])
    env = {k: v for k, v in os.environ.items() if k != "DEEPFAST_BACKEND"} | {"PYTHONPATH": path}
    python = [sys.executable, "-S"]
    run = subprocess.run(
        [*python, "-c", code, str(target)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    info = subprocess.run(
        [*python, "-m", "deepfast", "info"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert info.returncode == 0, info.stderr
    assert "cpp      no         deepfast._C did not load" in info.stdout


@pytest.mark.skipif(backends.extension is None, reason="deepfast._C not built")
def test_extension_reports_its_build():
    ext = backends.extension
    assert ext.version == deepfast.__version__
    assert "cpp" in ext.backends and ext.openmp and ext.num_threads() >= 1


@pytest.mark.skipif(backends.extension is None, reason="deepfast._C not built")
def test_stub_declares_what_the_extension_has():
    """deepfast/_C.pyi names exactly the public attributes of the built module, with their types."""
    stub = ast.parse((REPO / "deepfast" / "_C.pyi").read_text())
    declared = {n.target.id: ast.unparse(n.annotation) for n in stub.body if isinstance(n, ast.AnnAssign)}
    declared |= {n.name: "function" for n in stub.body if isinstance(n, ast.FunctionDef)}
    ext = backends.extension
    assert set(declared) == {n for n in dir(ext) if not n.startswith("_")}
    kinds = {"str": str, "bool": bool, "tuple[str, ...]": tuple, "function": type(ext.num_threads)}
    for name, kind in declared.items():
        assert isinstance(getattr(ext, name), kinds[kind]), name


OPTIONAL = ["PIL", "sklearn", "skimage", "tqdm", "matplotlib", "triton", "torchattacks"]


def _without_optional(code: str) -> subprocess.CompletedProcess:
    """code run by a Python where the optional packages cannot be imported (as in a bare install)."""
    block = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in OPTIONAL)
    return subprocess.run(
        [sys.executable, "-c", block + code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=pathlib.Path(__file__).parent.parent,
    )


def test_import_deepfast_needs_only_torch():
    """`import deepfast` (ops, layers, losses, models, attacks, defenses, training, data) works without
    Pillow, scikit-learn, scikit-image, tqdm, matplotlib, Triton and torchattacks, as in the CUDA build
    check's venv: each is imported where it is used."""
    run = _without_optional(
        "import deepfast, deepfast.ops, deepfast.nn, deepfast.losses, deepfast.models, "
        "deepfast.attacks, deepfast.defenses, deepfast.train, deepfast.data\n"
    )
    assert run.returncode == 0, run.stderr


def test_tests_collect_with_only_torch_numpy_and_pytest():
    """The test suite collects without the optional packages: the modules that need one skip."""
    run = _without_optional(
        "import pytest\nsys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', 'tests']))\n"
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
