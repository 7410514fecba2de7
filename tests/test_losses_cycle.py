"""deepfast.losses.CycleConsistencyLoss against the nn.L1Loss terms of the reference CycleGAN code."""

import pytest
import torch
from torch import nn

import deepfast
from deepfast.losses import CycleConsistencyLoss

SHAPE_A, SHAPE_B = (2, 3, 8, 6), (2, 1, 5, 7)  # the two domains may differ in channels and size


def reference_cyclegan(real_a, real_b, rec_a, rec_b, idt_a, idt_b, lambda_a, lambda_b, lambda_idt):
    """The generator's cycle and identity terms as junyanz/pytorch-CycleGAN-and-pix2pix computes them."""
    criterion_cycle, criterion_idt = nn.L1Loss(), nn.L1Loss()
    terms = {
        "cycle_a": criterion_cycle(rec_a, real_a) * lambda_a,
        "cycle_b": criterion_cycle(rec_b, real_b) * lambda_b,
    }
    if lambda_idt > 0:
        terms["idt_a"] = criterion_idt(idt_a, real_b) * lambda_b * lambda_idt
        terms["idt_b"] = criterion_idt(idt_b, real_a) * lambda_a * lambda_idt
    return sum(terms.values()), terms


def make_batch(seed=0, dtype=torch.float32):
    """real_a, real_b (data, no grad) and rec_a, rec_b, idt_a, idt_b (generator outputs, requiring grad)."""
    g = torch.Generator().manual_seed(seed)
    real_a, rec_a, idt_b = (torch.rand(SHAPE_A, generator=g, dtype=dtype) * 2 - 1 for _ in range(3))
    real_b, rec_b, idt_a = (torch.rand(SHAPE_B, generator=g, dtype=dtype) * 2 - 1 for _ in range(3))
    return real_a, real_b, *(t.requires_grad_() for t in (rec_a, rec_b, idt_a, idt_b))


@pytest.mark.parametrize("lambda_identity", [0.5, 0.0])
@pytest.mark.parametrize("lambdas", [(10.0, 10.0), (3.0, 7.5)])
def test_matches_reference_cyclegan_terms(backend_device, lambdas, lambda_identity):
    backend, _ = backend_device
    real_a, real_b, rec_a, rec_b, idt_a, idt_b = make_batch()
    generated = (rec_a, rec_b, idt_a, idt_b)
    want, want_terms = reference_cyclegan(real_a, real_b, *generated, *lambdas, lambda_identity)
    want_grads = torch.autograd.grad(want, generated, allow_unused=True)
    loss_fn = CycleConsistencyLoss(*lambdas, lambda_identity=lambda_identity)
    with deepfast.use_backend(backend):
        got = loss_fn(real_a, real_b, *generated)
    got_grads = torch.autograd.grad(got, generated, allow_unused=True)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)
    assert loss_fn.terms.keys() == want_terms.keys()
    for name, term in loss_fn.terms.items():
        assert not term.requires_grad
        torch.testing.assert_close(term, want_terms[name].detach(), rtol=2e-5, atol=2e-5)
    for a, b in zip(got_grads, want_grads, strict=True):
        assert (a is None) == (b is None)  # idt_a, idt_b get no gradient when identity is off
        if a is not None:
            torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-7)


def test_identity_terms_need_their_tensors():
    real_a, real_b, rec_a, rec_b, idt_a, idt_b = make_batch()
    loss_fn = CycleConsistencyLoss()
    cycle_only = loss_fn(real_a, real_b, rec_a, rec_b)
    assert set(loss_fn.terms) == {"cycle_a", "cycle_b"}
    with_idt_a = loss_fn(real_a, real_b, rec_a, rec_b, idt_a=idt_a)
    assert set(loss_fn.terms) == {"cycle_a", "cycle_b", "idt_a"}
    torch.testing.assert_close(with_idt_a - cycle_only, 10.0 * 0.5 * nn.functional.l1_loss(idt_a, real_b))
    loss_fn(real_a, real_b, rec_a, rec_b, idt_a, idt_b)
    assert set(loss_fn.terms) == {"cycle_a", "cycle_b", "idt_a", "idt_b"}


def test_real_images_get_no_gradient_and_generators_do():
    real_a, real_b, rec_a, rec_b, idt_a, idt_b = make_batch()
    CycleConsistencyLoss()(real_a, real_b, rec_a, rec_b, idt_a, idt_b).backward()
    assert real_a.grad is None and real_b.grad is None
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (rec_a, rec_b, idt_a, idt_b))


def test_half_precision_and_compile():
    real_a, real_b, rec_a, rec_b, idt_a, idt_b = make_batch(dtype=torch.bfloat16)
    loss_fn = CycleConsistencyLoss()
    eager = loss_fn(real_a, real_b, rec_a, rec_b, idt_a, idt_b)
    assert eager.dtype == torch.bfloat16 and eager.dim() == 0
    compiled = torch.compile(loss_fn, fullgraph=True)(real_a, real_b, rec_a, rec_b, idt_a, idt_b)
    torch.testing.assert_close(compiled, eager)


@pytest.mark.parametrize("name", ["lambda_a", "lambda_b", "lambda_identity"])
def test_bad_lambda_names_the_argument(name):
    with pytest.raises(ValueError, match=f"{name} must be finite"):
        CycleConsistencyLoss(**{name: float("nan")})


def test_exposed_from_the_package():
    assert deepfast.losses.CycleConsistencyLoss is CycleConsistencyLoss
    assert "lambda_identity=0.5" in repr(CycleConsistencyLoss())
