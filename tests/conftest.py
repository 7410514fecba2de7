"""Shared fixtures: the (backend, device) pairs this machine can test, poisoned outputs, and what the
training tests share (tiny datasets, one thread, crash-and-resume)."""

import contextlib
import os

import torch

# Without a GPU, Triton kernels run in the interpreter on CPU tensors; set before they are imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import deepfast  # noqa: E402
from deepfast import backends  # noqa: E402

# `make fuzz` sets DEEPFAST_FUZZ=long: the tests marked fuzz then run their long form (more cases).
FUZZ_LONG = os.environ.get("DEEPFAST_FUZZ") == "long"


def fuzz_cases(short: int, long: int) -> int:
    """How many cases a fuzz test runs: ``short`` in `make test`, ``long`` under `make fuzz`."""
    return long if FUZZ_LONG else short


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BACKEND_DEVICES = [
    (name, device)
    for device in DEVICES
    for name in backends.BACKENDS
    if backends.status()[name].available and backends.runs_on(name, device)
]


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


def compiled_namespaces() -> list[str]:
    """The namespaces of dispatcher ops with kernels here: deepfast (deepfast._C), deepfast_triton."""
    return [
        ns
        for ns, ok in (
            ("deepfast", backends.extension is not None),
            ("deepfast_triton", backends.status()["triton"].available),
        )
        if ok
    ]


@pytest.fixture(params=BACKEND_DEVICES, ids=[f"{b}-{d}" for b, d in BACKEND_DEVICES])
def backend_device(request) -> tuple[str, str]:
    """Every available backend on every device it runs: ("cpp", "cpu"), ("triton", "cuda"), ..."""
    return request.param


@pytest.fixture
def poison():
    """Fill every tensor allocated by torch.empty* with NaN, so an element a kernel leaves unwritten fails."""
    enabled = torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(enabled)
    torch.utils.deterministic.fill_uninitialized_memory = fill


# (rtol, atol) of a backend's result against the float64 reference computed from the same inputs.
TOLERANCE = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


def assert_compiles_fullgraph(fn, inputs, backend: str, op: str, grad_of=None) -> None:
    """``fn(*inputs)`` (a tensor) under torch.compile(fullgraph=True) with ``backend`` forced: the graph Dynamo
    captures calls ``op`` of the backend's namespace (torch backend: nothing to find), and the value and the
    gradients of inputs[i], i in grad_of (default: all; none for ``grad_of=()``), equal those of eager."""
    grad_of = range(len(inputs)) if grad_of is None else grad_of
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    with deepfast.use_backend(backend):
        torch._dynamo.reset()
        torch.compile(fn, fullgraph=True, backend=capture)(*inputs)
        results = []
        for f in (fn, torch.compile(fn, fullgraph=True)):
            args = [t.clone().requires_grad_(i in grad_of) for i, t in enumerate(inputs)]
            out = f(*args)
            results.append((out, *torch.autograd.grad(out, [args[i] for i in grad_of])) if grad_of else (out,))
    for eager, compiled in zip(*results, strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    called = {str(node.target) for node in graphs[0].graph.nodes}
    namespace = {"torch": None, "triton": "deepfast_triton", "cpp": "deepfast", "cuda": "deepfast"}[backend]
    assert namespace is None or f"{namespace}.{op}" in called, called


def compiled_op_pairs(name: str) -> list[tuple[str, object, object]]:
    """(backend label, op, backward op) of the compiled implementations of ``name`` present here."""
    label = {"deepfast": "cpp", "deepfast_triton": "triton"}
    ops = [(label[ns], getattr(torch.ops, ns)) for ns in compiled_namespaces()]
    return [(lab, getattr(ns, name), getattr(ns, f"{name}_backward")) for lab, ns in ops]


# ------------------------------------------------------------------------------ training tests
def tiny_digits(split="train", size=32, value_range=(0.0, 1.0), n=32):
    """The first n bundled digits for split "train", the next n // 2 for any other: a labelled dataset
    (deepfast.data.ImageTensors) small enough for training tests."""
    from deepfast.data import ImageTensors, digits

    data = digits("all", size=size, value_range=value_range)
    keep = slice(0, n) if split == "train" else slice(n, n + n // 2)
    return ImageTensors(data.images[keep], data.labels[keep], data.value_range)


@contextlib.contextmanager
def registered(**datasets):
    """``datasets`` ({name: function}) in deepfast.data.DATASETS inside the block, for the trainers to load."""
    from deepfast.data import DATASETS

    with pytest.MonkeyPatch.context() as mp:
        for name, fn in datasets.items():
            mp.setitem(DATASETS, name, fn)
        yield


@pytest.fixture
def tiny_dataset():
    """The first 32 bundled digits registered as the dataset "tiny" (``tiny_digits``) inside the test."""
    with registered(tiny=tiny_digits):
        yield


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and far faster than two when other work shares the CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def crash_and_resume(monkeypatch):
    """``run(config_for, folder)``, ``config_for(out)`` giving the TrainConfig of a run of 2 or more epochs
    in ``out``: trains it straight in folder/a, and in folder/b with a crash in the second epoch, then
    --resume; returns (straight, resumed) trainers, after checking that the crash kept epoch 1's checkpoint."""
    from deepfast.train import load_checkpoint, make_trainer

    def run(config_for, folder):
        straight = make_trainer(config_for(folder / "a"))
        straight.fit()
        crashing = make_trainer(config_for(folder / "b"))
        step = crashing.train_step

        def crash_in_epoch_2(batch):
            if crashing.epoch == 1:
                raise RuntimeError("simulated crash")
            return step(batch)

        monkeypatch.setattr(crashing, "train_step", crash_in_epoch_2)
        with pytest.raises(RuntimeError, match="simulated crash"):
            crashing.fit()
        assert load_checkpoint(folder / "b" / "last.pt")["epoch"] == 1
        resumed = make_trainer(config_for(folder / "b"))
        resumed.fit(resume=True)
        return straight, resumed

    return run
