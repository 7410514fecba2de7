"""PGD(amp=...) and PGD(cuda_graph=True).

On the CPU: the static run of deepfast.attacks.graphed (the step a CUDA graph captures, run eagerly)
equals the eager loop, early stop included; mixed-precision attacks run the model in low precision
and still work; bad settings are refused. On a GPU (marked cuda): the replayed graph gives the eager
results, is reused for the same batch shape, sees weights loaded in place, and is captured again
when the batch shape or the model's tensors change.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepfast.attacks import EOTPGD, PGD, Square, eval_mode
from deepfast.attacks.graphed import StaticRun
from tests.test_attacks import accuracy, correct_subset, lenet, val  # noqa: F401 (fixtures)


def linear_model() -> nn.Module:
    """float64 and linear: each sample's gradient is independent of the batch, bit for bit."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double()


def static_run(attack: PGD, x: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
    """The attack's run from x itself through StaticRun, stepping eagerly (no graph)."""
    with eval_mode(attack.model, freeze=True), torch.enable_grad():
        run = StaticRun(attack, x, goal, targeted)
        run.load(x, goal, x.clone())
        return run.run(attack.steps)


@pytest.mark.parametrize("norm,momentum", [("inf", 0.0), ("2", 0.0), ("inf", 1.0)])
@pytest.mark.parametrize("early_stop", [False, True])
@pytest.mark.parametrize("targeted", [False, True])
def test_static_run_equals_the_eager_loop(norm, momentum, early_stop, targeted):
    model = linear_model()
    x = torch.rand(41, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    goal = (y + 1) % 10 if targeted else y
    eps, alpha = (0.1, 0.02) if norm == "inf" else (1.0, 0.2)
    attack = PGD(
        model,
        eps,
        alpha,
        steps=8,
        random_start=False,
        norm=norm,
        momentum=momentum,
        early_stop=early_stop,
        target=goal if targeted else None,
    )
    expected = attack(x, y)
    with torch.no_grad():
        fooled = attack.succeeded(model(expected), goal, targeted)
    assert 0 < fooled.sum() < len(y)  # some samples stopped, some did not
    torch.testing.assert_close(static_run(attack, x, goal, targeted), expected, rtol=0, atol=1e-12)


def test_static_run_stops_when_every_sample_is_fooled():
    model = linear_model()
    x = torch.rand(9, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    seen = []
    model.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    attack = PGD(model, eps=1.0, alpha=0.5, steps=20, random_start=False)
    adv = static_run(attack, x, y, targeted=False)
    assert 1 < len(seen) < 20 and set(seen) == {9}  # the whole batch each step, and fewer steps than 20
    with torch.no_grad():
        assert (model(adv).argmax(1) != y).all()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_attacks_run_the_model_in_low_precision(lenet, val, amp):
    x, y = correct_subset(lenet, *val, 64)
    attacks = (PGD(lenet, 0.2, steps=10, amp=amp, seed=1), Square(lenet, 0.2, queries=60, amp=amp, seed=1))
    dtypes = set()
    hook = lenet.features[0].register_forward_hook(lambda mod, inp, out: dtypes.add(out.dtype))
    try:
        advs = [attack(x, y) for attack in attacks]
    finally:
        hook.remove()
    assert dtypes == {{"bf16": torch.bfloat16, "fp16": torch.float16}[amp]}
    for adv in advs:
        assert adv.dtype == torch.float32
        assert (adv - x).abs().max() <= 0.2 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        assert accuracy(lenet, adv, y) < 0.5


def test_cuda_graph_refused_where_it_cannot_work(lenet, val):
    x, y = val[0][:4], val[1][:4]
    with pytest.raises(ValueError, match="cuda_graph=True needs the model on a CUDA device, got cpu"):
        PGD(lenet, steps=2, cuda_graph=True)(x, y)
    with pytest.raises(ValueError, match="cuda_graph=True is not supported by EOTPGD"):
        EOTPGD(lenet, cuda_graph=True)


# --- on a GPU ------------------------------------------------------------------------------------------


def small_cnn(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    with torch.no_grad():  # BatchNorm statistics of some data, then eval mode
        model(torch.rand(64, 3, 15, 15))
    return model.to("cuda", dtype).eval()


def cuda_batch(model: nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = next(model.parameters()).dtype
    x = torch.rand(n, 3, 15, 15, device="cuda", dtype=dtype, generator=torch.Generator("cuda").manual_seed(n))
    with torch.no_grad():
        return x, model(x).argmax(1)


@pytest.mark.cuda
@pytest.mark.parametrize("norm", ["inf", "2"])
@pytest.mark.parametrize("early_stop", [False, True])
def test_cuda_graph_equals_eager(norm, early_stop):
    model = small_cnn(torch.float64)  # float64: the eager loop's smaller batches round the same
    x, y = cuda_batch(model, 37)
    settings = dict(
        eps=0.05 if norm == "inf" else 0.5,
        alpha=0.01 if norm == "inf" else 0.1,
        steps=6,
        random_start=False,
        norm=norm,
        early_stop=early_stop,
        momentum=0.5,
        normalization=([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]),
    )
    expected = PGD(model, **settings)(x, y)
    attack = PGD(model, cuda_graph=True, **settings)
    torch.testing.assert_close(attack(x, y), expected, rtol=0, atol=1e-10)
    assert attack._graphed[1].graph is not None


@pytest.mark.cuda
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_graph_with_amp_equals_the_eager_step(amp):
    torch.backends.cudnn.deterministic = True  # the same kernels, eager and replayed
    try:
        model = small_cnn(torch.float32)
        x, y = cuda_batch(model, 64)
        attack = PGD(model, eps=0.1, steps=8, random_start=False, cuda_graph=True, amp=amp)
        adv = attack(x, y)
        torch.testing.assert_close(adv, static_run(attack, x, y, targeted=False), rtol=0, atol=1e-6)
        assert (adv - x).abs().max() <= 0.1 + 1e-6
        with torch.no_grad():
            assert (model(adv).argmax(1) == y).float().mean() < 0.5
    finally:
        torch.backends.cudnn.deterministic = False


@pytest.mark.cuda
def test_cuda_graph_is_reused_and_captured_again_when_needed():
    model = small_cnn(torch.float64)
    settings = dict(eps=0.05, alpha=0.01, steps=4, random_start=False, early_stop=False)
    attack = PGD(model, cuda_graph=True, **settings)
    x, y = cuda_batch(model, 16)
    attack(x, y)
    first = attack._graphed[1]
    x2, y2 = cuda_batch(model, 16)  # same shape: the same graph, on the new batch
    torch.testing.assert_close(attack(x2, y2), PGD(model, **settings)(x2, y2), rtol=0, atol=1e-10)
    assert attack._graphed[1] is first
    with torch.no_grad():  # new weights copied in place: the same graph reads them
        for p in model.parameters():
            p.mul_(1.1)
    torch.testing.assert_close(attack(x2, y2), PGD(model, **settings)(x2, y2), rtol=0, atol=1e-10)
    assert attack._graphed[1] is first
    model[0].weight = nn.Parameter(model[0].weight.detach() * 0.9)  # a new tensor: captured again
    torch.testing.assert_close(attack(x2, y2), PGD(model, **settings)(x2, y2), rtol=0, atol=1e-10)
    assert attack._graphed[1] is not first
    x3, y3 = cuda_batch(model, 5)  # another batch size: captured again
    torch.testing.assert_close(attack(x3, y3), PGD(model, **settings)(x3, y3), rtol=0, atol=1e-10)
    assert attack._graphed[1].x0.shape[0] == 5
    with pytest.raises(ValueError, match="labels must hold class indices"):  # checked before any replay
        attack(x3, torch.full_like(y3, 10))
