"""The eps ball and the box hold in the images' dtype for every model dtype and every amp setting:
each attack keeps its iterate in the images' dtype and casts only the model's input (before,
a bf16 model used to move pixels by 0.0019 at eps 0 and 0.0328 at eps 8/255)."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.test_attacks import ATTACKS, lenet, val  # noqa: F401 (fixtures)

MODEL_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bf16": torch.bfloat16, "fp16": torch.float16}
# (model dtype, amp): low-precision weights, and float32 weights under each autocast.
SETTINGS = [
    ("float32", None),
    ("float64", None),
    ("bf16", None),
    ("fp16", None),
    ("float32", "bf16"),
    ("float32", "fp16"),
]


@pytest.fixture(scope="module")
def models(lenet):
    return {name: copy.deepcopy(lenet).to(dtype) for name, dtype in MODEL_DTYPES.items()}


def with_amp(factory, model, eps, amp):
    attack = factory(model, eps)
    attack.amp = amp  # every attack takes amp=; set after construction to reuse the factories
    return attack


CASES = [(m, a, torch.float32) for m, a in SETTINGS] + [
    ("bf16", None, torch.float64),
    ("float32", "bf16", torch.float64),
]


@pytest.mark.parametrize("model_dtype,amp,images_dtype", CASES, ids=[f"{m}-amp{a}-{str(i)[6:]}" for m, a, i in CASES])
@pytest.mark.parametrize("name", ATTACKS)
def test_ball_and_box_in_the_images_dtype(models, val, name, model_dtype, amp, images_dtype):
    x, y = val[0][:16].to(images_dtype), val[1][:16]
    model = models[model_dtype]
    assert torch.equal(with_amp(ATTACKS[name], model, 0.0, amp)(x, y), x)  # eps 0: not one pixel moves
    l2 = getattr(ATTACKS[name](model, 0.1), "norm", "inf") == "2"
    eps = 1.5 if l2 else 0.1  # large enough for the minimal-norm attacks (FAB) to find examples
    adv = with_amp(ATTACKS[name], model, eps, amp)(x, y)
    assert adv.dtype == images_dtype
    assert adv.min() >= 0 and adv.max() <= 1
    delta = (adv.double() - x.double()).flatten(1)
    ulp = torch.finfo(images_dtype).eps  # x0 +- eps rounded once in the images' dtype
    if l2:
        assert delta.norm(dim=1).max() <= eps * (1 + 8 * ulp)
    else:
        assert delta.abs().max() <= eps + ulp
    assert delta.abs().max() > 0
