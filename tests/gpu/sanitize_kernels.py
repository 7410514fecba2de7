"""Call every CUDA and Triton kernel once per dtype and variant, for compute-sanitizer (memcheck, racecheck).

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python tests/gpu/sanitize_kernels.py

The largest shapes wrap the grid-stride loops: more than the ~1056 resident blocks of 256 threads of
an H100/H200 (132 SMs x 8) for the elementwise kernels (>= 270k elements) and for PGD's tiles (300
samples of 4 tiles), and norm_leaky_relu groups of several chunks (rows beyond 16384 values, long rows cut
into segments, channels_last columns over several row chunks and two channel tiles).
"""

import torch

import deepfast
from deepfast import backends

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def reparameterize_kl(device: str) -> None:
    for dtype in DTYPES:
        for shape in [(1,), (37, 53), (4099, 129)]:
            mu, logvar, eps = (torch.randn(shape, device=device, dtype=dtype) for _ in range(3))
            for reduction in ("none", "sum", "batchmean"):
                m, v = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
                z, kl = deepfast.reparameterize_kl(m, v, eps, reduction=reduction)
                (z.sum() + kl.sum()).backward()


def cycle_l1(device: str) -> None:
    for dtype in DTYPES:
        for shape in [(1,), (37, 53), (2, 3, 67, 129), (16, 3, 128, 129)]:
            rec, orig = (torch.randn(shape, device=device, dtype=dtype) for _ in range(2))
            pairs = [(rec, orig), (rec[..., ::2], orig[..., ::2])]  # dense; strided (copied)
            if len(shape) == 4:
                channels_last = rec.contiguous(memory_format=torch.channels_last)
                pairs += [(channels_last, torch.randn_like(channels_last)), (channels_last, orig)]  # same layout; mixed
            for r, o in pairs:
                for wrt in ((True, True), (True, False), (False, True)):
                    for reduction in ("mean", "sum"):
                        r, o = r.detach().requires_grad_(wrt[0]), o.detach().requires_grad_(wrt[1])
                        deepfast.ops.cycle_l1(r, o, weight=2.0, reduction=reduction).backward()


def norm_leaky_relu(device: str) -> None:
    for dtype in DTYPES:
        for shape in [(2, 3, 1, 2), (3, 5, 7, 9), (4, 67, 33, 17), (64, 40, 16, 17), (2, 3, 130, 130)]:
            for channels_last in (False, True):
                x = torch.randn(shape, device=device, dtype=dtype)
                if channels_last:
                    x = x.to(memory_format=torch.channels_last)
                c = shape[1]
                w, b = (torch.randn(c, device=device, dtype=dtype, requires_grad=True) for _ in range(2))
                rm, rv = torch.zeros(c, device=device, dtype=dtype), torch.ones(c, device=device, dtype=dtype)
                for inplace in (False, True):
                    xs = x.clone().requires_grad_()
                    for training in (True, False):
                        y = deepfast.ops.batch_norm_leaky_relu(xs, w, b, rm, rv, training=training, inplace=inplace)
                        y.sum().backward()
                    deepfast.ops.instance_norm_leaky_relu(xs, w, b, inplace=inplace).sum().backward()


def pgd_step(device: str) -> None:
    for dtype in DTYPES:
        for shape in [(1, 1), (5, 1, 13, 11), (3, 3, 67, 129), (300, 3, 33, 33)]:  # several tiles per sample
            x_orig = torch.rand(shape, device=device, dtype=dtype)
            x_adv, grad = deepfast.ops.pgd_random_start(x_orig, 0.1), torch.randn_like(x_orig)
            step = torch.full((shape[0],), 0.02, device=device)
            layouts = [(x_adv, grad, x_orig), (x_adv[..., ::2], grad[..., ::2], x_orig[..., ::2])]  # strided: copied
            if len(shape) == 4:
                layouts.append(tuple(t.contiguous(memory_format=torch.channels_last) for t in (x_adv, grad, x_orig)))
            for x, g, x0 in layouts:
                for norm in ("inf", "2"):
                    deepfast.ops.pgd_step(x, g, x0, step_size=step, eps=0.1, norm=norm)
                    deepfast.ops.pgd_step_(x.clone(), g, x0, step_size=0.02, eps=0.1, norm=norm, clamp=None)


EXERCISES = [reparameterize_kl, cycle_l1, norm_leaky_relu, pgd_step]


def main() -> None:
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    for backend in ("cuda", "triton"):
        if not backends.status()[backend].available:
            print(f"skip {backend}: {backends.status()[backend].detail}")
            continue
        with deepfast.use_backend(backend):
            for exercise in EXERCISES:
                exercise("cuda")
                torch.cuda.synchronize()
                print(f"ran {exercise.__name__} on {backend}")


if __name__ == "__main__":
    main()
