"""What the fuzz tests share: seeded cases, the comparison with a float64 reference, the check that an
error names the argument, and inputs sprinkled with special values."""

from __future__ import annotations

import math
import random
import zlib

import torch

from conftest import fuzz_cases


def cases(name: str, short: int, long: int):
    """(index, random.Random, torch.Generator) for each case of test ``name``."""
    for i in range(fuzz_cases(short, long)):
        seed = zlib.crc32(name.encode()) + i
        yield i, random.Random(seed), torch.Generator().manual_seed(seed)


def close(
    got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str, atol: float = 0.0, factor: float = 1.0
) -> None:
    """got (in dtype) against the float64 ref: |got - ref| <= factor * tol * (1 + max|ref|) + atol, NaN where
    ref is, the same infinities; tol by dtype (2e-4 for float32)."""
    tol = factor * {torch.float64: 1e-9, torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype, 2e-4)
    assert got.shape == ref.shape, what
    ref = ref.to(torch.float64)
    got = got.to(torch.float64)
    assert torch.equal(got.isnan(), ref.isnan()), f"{what}: NaN where the reference has none (or not where it has)"
    finite = ref.isfinite()
    assert torch.equal(got[~finite & ~ref.isnan()], ref[~finite & ~ref.isnan()]), f"{what}: infinities differ"
    err = (got[finite] - ref[finite]).abs().max().item() if finite.any() else 0.0
    scale = ref[finite].abs().max().item() if finite.any() else 0.0
    assert err <= tol * (1 + scale) + atol, f"{what}: max |diff| {err:.3g} against max |ref| {scale:.3g}"


def named(err: Exception, *names: str) -> None:
    assert isinstance(err, (ValueError, TypeError)), f"{type(err).__name__}: {err}"
    assert any(n in str(err) for n in names), f"the message names none of {names}: {err}"


SPECIALS = (math.nan, math.inf, -math.inf, 0.0, -0.0, 1e30, -1e30, 1e-40)


def sprinkle(rng: random.Random, g: torch.Generator, shape, dtype, specials=SPECIALS) -> torch.Tensor:
    """Normal values at a random scale, with some entries set to special values (NaN, +-inf, huge, subnormal)."""
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 10 ** rng.uniform(-2, 3)
    if specials and rng.random() < 0.4:
        flat = x.view(-1)
        for _ in range(rng.randint(1, 3)):
            flat[rng.randrange(flat.numel())] = rng.choice(specials)
    return x.to(dtype)
