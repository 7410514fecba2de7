"""Seeded random fuzzing of the public layers (deepfast.nn), the losses (deepfast.losses) and the attacks'
input checks. Every case is either a correct result (the layer or loss against its float64 torch
formula, forward and backward; an attack's output inside its eps ball and the box) or an error of a
named kind whose message names the argument at fault. Never a crash, a hang or a silent difference.

Cases per test: ``fuzz_cases(short, long)`` (conftest): the short form in `make test`, the long one
under `make fuzz` (DEEPFAST_FUZZ=long). Each test's generator is seeded from its name and case index,
so a failure message's case number reproduces it.

Left to the op fuzz suite (tests/test_fuzz_ops.py): empty spatial dimensions,
non-finite values, mixed input/parameter dtypes and constant channels in the fused norms.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from deepfast.attacks import APGD, APGDDLR, BIM, EOTPGD, FGSM, MIFGSM, PGD, Square
from deepfast.losses import CycleConsistencyLoss, GANLoss, VAELoss
from deepfast.nn import BatchNormLeakyReLU2d, InstanceNormLeakyReLU2d
from fuzzing import cases, close, named, sprinkle

pytestmark = [pytest.mark.fuzz, pytest.mark.usefixtures("one_thread")]


# ------------------------------------------------------------------------------------------------ layers
def random_input(rng: random.Random, g: torch.Generator, shape, dtype) -> torch.Tensor:
    """Finite values at a random scale and offset, in a random layout: contiguous, channels_last, strided."""
    scale, shift = 10 ** rng.uniform(-3, 3), rng.uniform(-2, 2)
    layout = rng.choice(["contiguous", "channels_last", "strided"])
    if layout == "strided":
        big = torch.randn(*shape[:-1], 2 * shape[-1], generator=g, dtype=dtype)
        x = big[..., ::2]
    else:
        x = torch.randn(*shape, generator=g, dtype=dtype)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
    return x * scale + shift * scale


@pytest.mark.parametrize("kind", ["batch", "instance"])
def test_fused_norm_layers_match_torch(kind):
    for i, rng, g in cases(f"norm-{kind}", 60, 1500):
        n, c, h, w = rng.randint(1, 4), rng.randint(1, 5), rng.randint(1, 6), rng.randint(1, 6)
        dtype = rng.choice([torch.float32, torch.float64])
        slope, affine, training = rng.choice([0.01, 0.2, 1.0]), rng.random() < 0.7, rng.random() < 0.6
        x = random_input(rng, g, (n, c, h, w), dtype)
        if kind == "batch":
            layer = BatchNormLeakyReLU2d(c, slope, affine=affine, dtype=dtype)
            ref = nn.BatchNorm2d(c, affine=affine, dtype=torch.float64)
            ref.running_mean.copy_(torch.randn(c, generator=g))
            ref.running_var.copy_(torch.rand(c, generator=g) + 0.1)
            layer.running_mean.copy_(ref.running_mean)
            layer.running_var.copy_(ref.running_var)
        else:
            layer = InstanceNormLeakyReLU2d(c, slope, affine=affine, dtype=dtype)
            ref = nn.InstanceNorm2d(c, affine=affine, dtype=torch.float64)
        if affine:
            with torch.no_grad():
                ref.weight.copy_(torch.randn(c, generator=g).sign() * (torch.rand(c, generator=g) + 0.2))
                ref.bias.copy_(torch.randn(c, generator=g))
                layer.weight.copy_(ref.weight)
                layer.bias.copy_(ref.bias)
        layer.train(training), ref.train(training)
        xa, xr = x.clone().requires_grad_(), x.detach().double().requires_grad_()
        try:
            want = F.leaky_relu(ref(xr), slope)
        except ValueError:  # torch refuses it (one value per channel or plane): so must the layer
            with pytest.raises((ValueError, TypeError)) as ours:
                layer(xa)
            named(ours.value, "x", "value", "spatial")
            continue
        got = layer(xa)
        what = f"case {i}: {kind} {tuple(x.shape)} {dtype} slope={slope} affine={affine} training={training}"
        close(got, want, dtype, what)
        grad = torch.randn(want.shape, generator=g, dtype=torch.float64)
        grads = torch.autograd.grad(got, [xa, *([layer.weight] if affine else [])], grad.to(dtype))
        wants = torch.autograd.grad(want, [xr, *([ref.weight] if affine else [])], grad)
        for a, b, name in zip(grads, wants, ("dx", "dweight")):
            close(a, b, dtype, f"{what}: {name}")
        if kind == "batch" and training:
            close(layer.running_mean, ref.running_mean, dtype, f"{what}: running_mean")
            close(layer.running_var, ref.running_var, dtype, f"{what}: running_var")


def test_layers_refuse_bad_input_naming_it():
    for i, rng, g in cases("layer-bad", 80, 2000):
        c = rng.randint(1, 4)
        layer = rng.choice([BatchNormLeakyReLU2d(c), InstanceNormLeakyReLU2d(c, affine=True)])
        fault = rng.choice(["ndim", "channels", "int", "bool"])
        shape = [rng.randint(2, 3), c, rng.randint(2, 4), rng.randint(2, 4)]
        if fault == "ndim":
            shape = shape[: rng.choice([1, 2, 3])] if rng.random() < 0.5 else [*shape, 2]
        elif fault == "channels":
            shape[1] = c + rng.randint(1, 3)
        x = torch.randn(shape, generator=g)
        x = x.long() if fault == "int" else x > 0 if fault == "bool" else x
        with pytest.raises((ValueError, TypeError)) as err:
            layer(x)
        named(err.value, "input", "x ", "x must", "weight")


# ------------------------------------------------------------------------------------------------ losses
def test_gan_loss_matches_its_formula():
    for i, rng, g in cases("gan", 120, 3000):
        mode = rng.choice(["non-saturating", "saturating", "lsgan", "hinge"])
        shape = rng.choice([(rng.randint(1, 5),), (rng.randint(1, 3), 1, rng.randint(1, 4), rng.randint(1, 4))])
        dtype = rng.choice([torch.float32, torch.float64, torch.bfloat16])
        real, fake = sprinkle(rng, g, shape, dtype), sprinkle(rng, g, shape, dtype)
        loss = GANLoss(mode)
        r, f = real.double(), fake.double()
        if mode == "lsgan":
            want_d, want_g = (r - 1).square().mean() + f.square().mean(), (f - 1).square().mean()
        elif mode == "hinge":
            want_d, want_g = F.relu(1 - r).mean() + F.relu(1 + f).mean(), -f.mean()
        else:
            want_d = F.softplus(-r).mean() + F.softplus(f).mean()
            want_g = -F.softplus(f).mean() if mode == "saturating" else F.softplus(-f).mean()
        what = f"case {i}: {mode} {shape} {dtype}"
        # computed in float32: compare with the float64 formula rounded to float32
        close(loss.discriminator(real, fake), want_d.float(), torch.float32, f"{what}: discriminator")
        close(loss.generator(fake), want_g.float(), torch.float32, f"{what}: generator")


def test_vae_loss_matches_its_formula_or_names_the_argument():
    for i, rng, g in cases("vae", 120, 3000):
        shape = (rng.randint(1, 4), rng.randint(1, 3), rng.randint(1, 4))
        reconstruction, beta = rng.choice(["bce", "mse"]), rng.choice([0.0, 1.0, 4.0])
        recon = (torch.rand(*shape, generator=g, dtype=torch.float64) * 0.98 + 0.01).to(
            rng.choice([torch.float32, torch.float64, torch.bfloat16, torch.float16])
        )
        x = torch.rand(*shape, generator=g).to(rng.choice([torch.float32, torch.float64]))
        kl = torch.tensor(rng.uniform(0, 5))
        fault = rng.choice([None, None, "recon range", "x range", "nan", "shape", "kl shape", "int"])
        if fault == "recon range":
            recon = recon + 1.5
        elif fault == "x range":
            x = x - 2
        elif fault == "nan":
            recon = recon.clone().view(-1).index_fill_(0, torch.tensor([0]), math.nan).view(shape)
        elif fault == "shape":
            x = x[:, :1, :1] if x.numel() > 1 and shape[1:] != (1, 1) else torch.rand(shape[0] + 1, *shape[1:])
        elif fault == "kl shape":
            kl = kl.expand(2)
        elif fault == "int":
            x = x.long()
        loss = VAELoss(beta, reconstruction)
        try:
            got = loss(recon, x, kl)
        except (ValueError, TypeError) as err:
            assert fault is not None and not (fault in ("recon range", "x range", "nan") and reconstruction == "mse"), (
                f"case {i}: refused a valid input: {err}"
            )
            named(err, "recon", "x", "kl")
            continue
        assert fault is None or (reconstruction == "mse" and fault in ("recon range", "x range", "nan")), (
            f"case {i}: {fault} accepted"
        )
        r, t = recon.double(), x.double()
        per = (
            -(t * r.log().clamp_min(-100) + (1 - t) * (1 - r).log().clamp_min(-100))
            if reconstruction == "bce"
            else (r - t).square()
        )
        want = per.sum() / shape[0] + beta * kl.double()
        close(got, want.float(), torch.float32, f"case {i}: {reconstruction} {fault}")


def test_cycle_loss_matches_its_formula():
    for i, rng, g in cases("cycle", 80, 2000):
        dtype = rng.choice([torch.float32, torch.float64])
        shape_a = (rng.randint(1, 3), rng.randint(1, 3), rng.randint(1, 5), rng.randint(1, 5))
        shape_b = (shape_a[0], rng.randint(1, 3), rng.randint(1, 5), rng.randint(1, 5))
        la, lb, li = rng.uniform(0, 20), rng.uniform(0, 20), rng.choice([0.0, 0.5])
        t = {
            k: sprinkle(rng, g, shape_a if k in ("real_a", "rec_a", "idt_b") else shape_b, dtype, specials=())
            for k in ("real_a", "real_b", "rec_a", "rec_b", "idt_a", "idt_b")
        }
        got = CycleConsistencyLoss(la, lb, li)(**t)
        d = {k: v.double() for k, v in t.items()}
        want = la * (d["rec_a"] - d["real_a"]).abs().mean() + lb * (d["rec_b"] - d["real_b"]).abs().mean()
        if li > 0:
            want = (
                want
                + lb * li * (d["idt_a"] - d["real_b"]).abs().mean()
                + la * li * (d["idt_b"] - d["real_a"]).abs().mean()
            )
        close(got, want, dtype, f"case {i}: {shape_a} {shape_b} {dtype}")


# ------------------------------------------------------------------------------------------------ attacks
class Tiny(nn.Module):
    """A 3-class linear classifier of (N, 1, 4, 4) images; ``fault`` makes it misbehave."""

    def __init__(self, fault: str | None = None) -> None:
        super().__init__()
        self.fault = fault
        self.linear = nn.Linear(16, 3)

    def forward(self, x):
        out = self.linear(x.flatten(1))
        if self.fault == "nan logits":
            return out * math.nan
        if self.fault == "inf logits":
            return out * math.inf
        if self.fault == "flat logits":
            return out.flatten()
        if self.fault == "one logit":
            return out[:, :1]
        if self.fault == "int logits":
            return out.long()
        return out


ATTACKS = {
    "fgsm": lambda m, e: FGSM(m, e),
    "pgd": lambda m, e: PGD(m, e, steps=2, seed=0),
    "pgd-l2": lambda m, e: PGD(m, e, steps=2, norm="2", seed=0),
    "bim": lambda m, e: BIM(m, e, steps=2),
    "mifgsm": lambda m, e: MIFGSM(m, e, steps=2),
    "apgd": lambda m, e: APGD(m, e, steps=2, seed=0),
    "apgd-dlr": lambda m, e: APGDDLR(m, e, steps=2, seed=0),
    "square": lambda m, e: Square(m, e, queries=3, seed=0),
    "eot": lambda m, e: EOTPGD(m, e, steps=2, eot_samples=2, seed=0),
}
FAULTS = {  # fault -> words one of which the error must contain
    None: (),
    "labels float": ("labels",),
    "labels bool": ("labels",),
    "labels shape": ("labels",),
    "labels high": ("labels",),
    "labels negative": ("labels",),
    "labels none": ("labels",),
    "images above 1": ("images",),
    "images below 0": ("images",),
    "images nan": ("images",),
    "images inf": ("images",),
    "images int": ("images",),
    "images 1d": ("images",),
    "images empty": ("images",),
    "images grad": ("images",),
    "nan logits": ("logits",),
    "inf logits": ("logits",),
    "flat logits": ("logits",),
    "one logit": ("logits",),
    "int logits": ("logits",),
}


def test_attacks_check_their_input():
    for i, rng, g in cases("attacks", 90, 2000):
        name, fault = rng.choice(list(ATTACKS)), None if rng.random() < 0.3 else rng.choice(list(FAULTS))
        n = rng.randint(1, 5)
        images = torch.rand(n, 1, 4, 4, generator=g, dtype=rng.choice([torch.float32, torch.float64]))
        labels = torch.randint(0, 3, (n,), generator=g)
        if fault == "labels float":
            labels = labels.float()
        elif fault == "labels bool":
            labels = labels > 0
        elif fault == "labels shape":
            labels = labels[:, None] if rng.random() < 0.5 else torch.cat([labels, labels[:1]])
        elif fault == "labels high":
            labels = labels.clone().index_fill_(0, torch.tensor([rng.randrange(n)]), rng.choice([3, 10, 2**40]))
        elif fault == "labels negative":
            labels = labels.clone().index_fill_(0, torch.tensor([rng.randrange(n)]), -1)
        elif fault == "labels none":
            labels = None
        elif fault and fault.startswith("images "):
            value = {"images above 1": 1.5, "images below 0": -0.25, "images nan": math.nan, "images inf": math.inf}
            if fault in value:
                images = (
                    images.clone()
                    .view(-1)
                    .index_fill_(0, torch.tensor([rng.randrange(16 * n)]), value[fault])
                    .view(n, 1, 4, 4)
                )
            elif fault == "images int":
                images = (images * 255).to(torch.uint8)
            elif fault == "images 1d":
                images = images.flatten()
            elif fault == "images empty":
                images, labels = images[:0], labels[:0]
            else:
                images = images.clone().requires_grad_()
        torch.manual_seed(i)
        model = Tiny(fault if fault and "logit" in fault else None)
        attack = ATTACKS[name](model, rng.choice([0.0, 0.05, 0.3]))
        what = f"case {i}: {name} with {fault}"
        try:
            adv = attack(images, labels)
        except (ValueError, TypeError) as err:
            assert fault is not None, f"{what}: refused a valid input: {err}"
            named(err, *FAULTS[fault])
            continue
        assert fault is None, f"{what}: accepted"
        assert adv.shape == images.shape and adv.dtype == images.dtype
        assert adv.min() >= 0 and adv.max() <= 1, what
        delta = (adv.double() - images.double()).flatten(1)
        norm = delta.norm(dim=1) if getattr(attack, "norm", "inf") == "2" else delta.abs().amax(dim=1)
        assert norm.max() <= attack.eps + 1e-6, what
