"""Shared fixtures: the (backend, device) pairs this machine can test, and poisoned outputs."""

import os

import torch

# Without a GPU, Triton kernels run in the interpreter on CPU tensors; set before they are imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import deepfast  # noqa: E402
from deepfast import backends  # noqa: E402

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
    return [ns for ns, ok in (("deepfast", backends.extension is not None),
                              ("deepfast_triton", backends.status()["triton"].available)) if ok]


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
