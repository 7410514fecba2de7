"""Benchmarks of deepfast.attacks: PGD-10 against the plain-torch PGD loop and torchattacks 3.5.1 on the
same model, same run; AutoAttack (standard) against torchattacks' AutoAttack.

Rows (op "attack PGD-10"):
  shape    256x1x32x32: a batch of 256 validation digits (deepfast.data.digits, size 32) and LeNet
           (deepfast.models.LeNet) trained on the training digits for 3 epochs (about 93% accuracy;
           deepfast/_fixtures.py:train_lenet, the model the tests attack)
  modes    Linf               eps 8/255, alpha 2/255, 10 steps, random start
           L2                 eps 0.5, alpha 0.125, 10 steps, random start
  impls    plain torch        deepfast.attacks.pgd_reference, the textbook loop (role "eager") from the
                              same kind of random start (deepfast.ops.pgd_random_start): grad of the
                              cross-entropy (summed over the batch, as in deepfast: with the mean, the
                              1e-10 of the L2 step's norm shortens the steps of confident samples) by
                              torch.autograd.grad; the step and projection in eager torch (new tensors
                              every step); the model in eval mode, its parameters requiring grad
           deepfast           deepfast.attacks.PGD(early_stop=False): the same work, with the fused
                              in-place step and the parameters frozen during the attack
           deepfast early-stop  deepfast.attacks.PGD (early_stop=True, the default): samples already
                              fooled stop moving and leave the batch
           deepfast bf16, deepfast bf16 early-stop  the same two with amp="bf16" (the model under
                              torch.autocast in bfloat16; fast on CPUs with bf16 instructions)
           torchattacks       torchattacks.PGD / PGDL2 (random start, no early stop: like for like with
                              "deepfast")

Op "attack AutoAttack": 64 validation digits, the same LeNet, Linf eps 8/255, one call per round:
  impls    torchattacks       torchattacks.AutoAttack(version="standard", n_classes=10, seed=0): APGD-CE,
                              APGD-T, FAB-T with 10 steps each (its defaults), Square 5000 queries
           deepfast 10 steps  deepfast.attacks.AutoAttack(steps=10): like for like
           deepfast           deepfast.attacks.AutoAttack: the paper's settings (100 steps each)

Op "attack PGD-10 ResNet-18" (on the CPU a batch of 32: one attack of 256 takes about a minute there):
  shape    256x3x32x32 (CPU: 32x3x32x32): a batch of random images and deepfast.models.ResNet18(impl="reference") (plain
           torch layers, as a user's model would be; random weights, BatchNorm statistics of random
           images), labels = its own predictions (clean accuracy 100%); Linf eps 8/255, alpha 2/255,
           10 steps from a random start, every sample every step unless "early-stop"
  impls    plain torch        the textbook loop (role "eager"), float32 (every row: float32 images)
           plain torch compiled  the same loop on torch.compile(model) (role "compile")
           deepfast           PGD(early_stop=False), float32
           deepfast bf16      PGD(early_stop=False, amp="bf16")
           deepfast graph     PGD(early_stop=False, cuda_graph=True), float32
           deepfast graph bf16  PGD(early_stop=False, cuda_graph=True, amp="bf16"): the GPU target row
           deepfast graph bf16 early-stop  the same with early stop (the default)
           deepfast early-stop  PGD with early stop (the default), float32
           torchattacks       torchattacks.PGD, float32 (random start, no early stop)
  The graph rows run on a GPU only.

Time per call of the whole attack (images/s = batch / time); bytes moved are not meaningful here (the
model's forward and backward dominate) and are left out. The torchattacks rows are skipped where it is
not installed (``make test`` / ``make bench`` install it).
"""

from __future__ import annotations

import functools

import pytest
import torch

from benchmarks.conftest import measure
from deepfast._fixtures import train_lenet
from deepfast.attacks import PGD, AutoAttack, pgd_reference
from deepfast.data import digits
from deepfast.models import ResNet18
from deepfast.ops import pgd_random_start

OP = "attack PGD-10"
BATCH = 256
MODES = {"Linf": dict(norm="inf", eps=8 / 255, alpha=2 / 255), "L2": dict(norm="2", eps=0.5, alpha=0.125)}
IMPLS = ("plain torch", "deepfast", "deepfast early-stop", "deepfast bf16", "deepfast bf16 early-stop", "torchattacks")
STEPS = 10


@pytest.fixture(scope="module")
def lenet_digits(device):
    val = digits("val", size=32)
    return train_lenet().to(device), val.images[:BATCH].to(device), val.labels[:BATCH].to(device)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
def test_attack_pgd(benchmark, device, copy_bandwidth, lenet_digits, mode, impl):
    model, x, y = lenet_digits
    args = MODES[mode]
    eps, alpha, norm = args["eps"], args["alpha"], args["norm"]
    if impl == "plain torch":

        def step():
            return pgd_reference(model, x, y, eps, alpha, STEPS, norm, start=pgd_random_start(x, eps, norm))
    elif impl == "torchattacks":
        ta = pytest.importorskip("torchattacks")
        cls = ta.PGD if norm == "inf" else ta.PGDL2
        step = functools.partial(cls(model, eps=eps, alpha=alpha, steps=STEPS, random_start=True), x, y)
    else:
        # first, without the random start and early stop, the same result as the plain loop: after all
        # steps for Linf; after one for L2, whose later steps amplify rounding differences (of the norms)
        # through the gradients of confident samples, which are near the float32 resolution
        steps = STEPS if norm == "inf" else 1
        same = PGD(model, eps, alpha, steps, random_start=False, norm=norm, early_stop=False)
        torch.testing.assert_close(same(x, y), pgd_reference(model, x, y, eps, alpha, steps, norm), rtol=0, atol=1e-6)
        attack = PGD(
            model,
            eps,
            alpha,
            STEPS,
            norm=norm,
            early_stop=impl.endswith("early-stop"),
            amp="bf16" if "bf16" in impl else None,
        )

        def step():
            return attack(x, y)

    adv = step()
    with torch.no_grad():
        robust = (model(adv).argmax(1) == y).float().mean().item()
    measure(
        benchmark,
        step,
        device=device,
        copy_bandwidth=copy_bandwidth,
        bytes_moved=0,
        op=OP,
        shape=tuple(x.shape),
        mode=mode,
        impl=impl,
        role="eager" if impl == "plain torch" else impl,
        dtype="float32",
        robust_accuracy=robust,
        note="attack PGD-10: LeNet on digits; images/s = 256 / median",
    )


AUTOATTACK_IMPLS = ("torchattacks", "deepfast 10 steps", "deepfast")


@pytest.mark.parametrize("impl", AUTOATTACK_IMPLS)
def test_autoattack(benchmark, device, copy_bandwidth, lenet_digits, impl):
    model, x, y = lenet_digits
    x, y, eps = x[:64], y[:64], 8 / 255
    if impl == "torchattacks":
        ta = pytest.importorskip("torchattacks")
        attack = ta.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    else:
        attack = AutoAttack(model, eps, **({"steps": 10} if impl == "deepfast 10 steps" else {}))
    adv = attack(x, y)
    with torch.no_grad():
        robust = (model(adv).argmax(1) == y).float().mean().item()
    measure(
        benchmark,
        functools.partial(attack, x, y),
        device=device,
        copy_bandwidth=copy_bandwidth,
        bytes_moved=0,
        op="attack AutoAttack",
        shape=tuple(x.shape),
        mode="Linf",
        impl=impl,
        role="eager" if impl == "torchattacks" else impl,
        dtype="float32",
        robust_accuracy=robust,
        warmup=0,
        rounds=1,
        note="AutoAttack standard, Linf 8/255, LeNet on 64 digits; images/s = 64 / median",
    )


RESNET_IMPLS = {  # impl -> PGD settings beyond eps, alpha, steps (None: the plain loop or torchattacks)
    "plain torch": None,
    "plain torch compiled": None,
    "torchattacks": None,
    "deepfast early-stop": dict(),
    "deepfast": dict(early_stop=False),
    "deepfast bf16": dict(early_stop=False, amp="bf16"),
    "deepfast graph": dict(early_stop=False, cuda_graph=True),
    "deepfast graph bf16": dict(early_stop=False, cuda_graph=True, amp="bf16"),
    "deepfast graph bf16 early-stop": dict(cuda_graph=True, amp="bf16"),
}


@pytest.fixture(scope="module")
def resnet_batch(device):
    batch = BATCH if device.type == "cuda" else 32  # an attack of 256 takes about a minute on this CPU
    torch.manual_seed(0)
    model = ResNet18(impl="reference").to(device)
    with torch.no_grad():  # BatchNorm running statistics of random images, then eval mode
        for _ in range(5):
            model(torch.rand(batch, 3, 32, 32, device=device))
    model.eval()
    x = torch.rand(batch, 3, 32, 32, device=device)
    with torch.no_grad():
        return model, x, model(x).argmax(1)


@pytest.mark.parametrize("impl", RESNET_IMPLS)
def test_attack_pgd_resnet18(benchmark, device, copy_bandwidth, resnet_batch, impl):
    model, x, y = resnet_batch
    eps, alpha = 8 / 255, 2 / 255
    settings = RESNET_IMPLS[impl]
    if device.type != "cuda" and ("graph" in impl or "compiled" in impl or "bf16" in impl):
        pytest.skip("CUDA graph, compiled and bf16 ResNet-18 rows run on a GPU only")
    if impl == "torchattacks":
        ta = pytest.importorskip("torchattacks")
        step = functools.partial(ta.PGD(model, eps=eps, alpha=alpha, steps=STEPS, random_start=True), x, y)
    elif settings is None:
        net = torch.compile(model) if impl.endswith("compiled") else model

        def step():
            return pgd_reference(net, x, y, eps, alpha, STEPS, start=pgd_random_start(x, eps))
    else:
        attack = PGD(model, eps, alpha, STEPS, **settings)

        def step():
            return attack(x, y)

    adv = step()
    with torch.no_grad():
        robust = (model(adv).argmax(1) == y).float().mean().item()
    role = {"plain torch": "eager", "plain torch compiled": "compile"}.get(impl, impl)
    measure(
        benchmark,
        step,
        device=device,
        copy_bandwidth=copy_bandwidth,
        bytes_moved=0,
        op="attack PGD-10 ResNet-18",
        shape=tuple(x.shape),
        mode="Linf",
        impl=impl,
        role=role,
        dtype="float32",
        robust_accuracy=robust,
        warmup=1,
        rounds=None if device.type == "cuda" else 3,
        note=f"ResNet-18 (reference layers, random weights) at batch {len(x)}; images/s = {len(x)} / median",
    )
