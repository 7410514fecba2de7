"""Benchmarks of deepfast.attacks: PGD-10 against the plain-torch PGD loop on the same model, same run.

Rows (op "attack PGD-10"):
  shape    256x1x32x32: a batch of 256 validation digits (deepfast.data.digits, size 32) and LeNet
           (deepfast.models.LeNet) trained on the training digits for 3 epochs (about 93% accuracy)
  modes    Linf               eps 8/255, alpha 2/255, 10 steps, random start
           L2                 eps 0.5, alpha 0.125, 10 steps, random start
  impls    plain torch        the textbook loop (role "eager"): x.requires_grad_(); grad of the
                              cross-entropy (summed over the batch, as deepfast does: with the mean, the
                              1e-10 of the L2 step's norm shortens the steps of confident samples) by
                              torch.autograd.grad; the step and projection in eager torch (new tensors
                              every step)
           deepfast           deepfast.attacks.PGD(early_stop=False): the same work, with the fused
                              in-place step and the parameters frozen during the attack
           deepfast early-stop  deepfast.attacks.PGD (early_stop=True, the default): samples already
                              fooled stop moving and leave the batch

torchattacks is not installed in this project's environment, so there is no torchattacks row. Time per
call of the whole attack (images/s = 256 / time); bytes moved are not meaningful here (the model's
forward and backward dominate) and are left out.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from benchmarks.conftest import measure
from deepfast.attacks import PGD
from deepfast.data import digits
from deepfast.models import LeNet

OP = "attack PGD-10"
BATCH = 256
MODES = {"Linf": dict(norm="inf", eps=8 / 255, alpha=2 / 255), "L2": dict(norm="2", eps=0.5, alpha=0.125)}
IMPLS = ("plain torch", "deepfast", "deepfast early-stop")
STEPS = 10


@pytest.fixture(scope="module")
def lenet_digits(device):
    torch.manual_seed(0)
    train = digits("train", size=32)
    model = LeNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        order = torch.randperm(len(train))
        for i in range(0, len(train), 64):
            batch = order[i : i + 64]
            loss = F.cross_entropy(model(train.images[batch]), train.labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    val = digits("val", size=32)
    return model.eval().to(device), val.images[:BATCH].to(device), val.labels[:BATCH].to(device)


def plain_pgd(model, x0, y, eps, alpha, steps, norm, random_start=True):
    """The plain-torch PGD loop (torchattacks-style formulas, written here)."""
    x = x0.clone()
    if random_start and norm == "inf":
        x = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    elif random_start:
        d = torch.randn_like(x)
        r = eps * torch.rand(x.shape[0], 1, 1, 1, device=x.device) ** (1 / x[0].numel())
        x = (x + d * r / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)
    for _ in range(steps):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
        x = x.detach()
        if norm == "inf":
            x = torch.clamp(torch.min(torch.max(x + alpha * g.sign(), x0 - eps), x0 + eps), 0, 1)
        else:
            x = x + alpha * g / (g.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-10)
            d = x - x0
            n = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            x = torch.clamp(x0 + d * torch.where(n > eps, eps / n, 1.0), 0, 1)
    return x


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", MODES)
def test_attack_pgd(benchmark, device, copy_bandwidth, lenet_digits, mode, impl):
    model, x, y = lenet_digits
    args = MODES[mode]
    if impl == "plain torch":
        def step():
            return plain_pgd(model, x, y, args["eps"], args["alpha"], STEPS, args["norm"])
    else:
        # first, without the random start and early stop, the same result as the plain loop: after all
        # steps for Linf; after one for L2, whose later steps amplify rounding differences (of the norms)
        # through the gradients of confident samples, which are near the float32 resolution
        steps = STEPS if args["norm"] == "inf" else 1
        same = PGD(model, args["eps"], args["alpha"], steps, random_start=False, norm=args["norm"], early_stop=False)
        want = plain_pgd(model, x, y, args["eps"], args["alpha"], steps, args["norm"], random_start=False)
        torch.testing.assert_close(same(x, y), want, rtol=0, atol=1e-6)
        attack = PGD(model, args["eps"], args["alpha"], STEPS, norm=args["norm"], early_stop=impl.endswith("early-stop"))

        def step():
            return attack(x, y)

    adv = step()
    with torch.no_grad():
        robust = (model(adv).argmax(1) == y).float().mean().item()
    measure(benchmark, step, device=device, copy_bandwidth=copy_bandwidth, bytes_moved=0, op=OP,
            shape=tuple(x.shape), mode=mode, impl=impl, role="eager" if impl == "plain torch" else impl,
            dtype="float32", robust_accuracy=robust,
            note="attack PGD-10: LeNet on digits; images/s = 256 / median; torchattacks is not installed here")
