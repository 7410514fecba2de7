"""Batch norm (+ LeakyReLU) with statistics over the batches of every process: what ``--sync-bn``
trains with under torch.distributed, on CPUs (gloo) as well as GPUs (torch's nn.SyncBatchNorm is
GPU-only and would drop the activation of a fused layer)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Sum over the processes; its gradient is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncBatchNormLeakyReLU2d(nn.BatchNorm2d):
    """LeakyReLU(BatchNorm2d(x)) whose training statistics are those of the global batch.

    In training mode with a process group of more than one process: per channel, the sums of x and x^2
    and the element count are all-reduced (differentiably: the backward all-reduces their gradients),
    mean = S1 / n, var = S2 / n - mean^2 (in float32), y = (x - mean) / sqrt(var + eps) * weight + bias,
    running stats updated with the unbiased variance as nn.BatchNorm2d does. Otherwise (eval, or one
    process) it is nn.BatchNorm2d. negative_slope=1 means no activation. Same parameters, buffers and
    state_dict keys as nn.BatchNorm2d. (N, C, H, W) -> (N, C, H, W); every process must call it.
    """

    def __init__(
        self, num_features: int, negative_slope: float = 1.0, eps: float = 1e-5, momentum: float | None = 0.1
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            y = super().forward(x)
        else:
            y = self._global_batch_norm(x)
        return y if self.negative_slope == 1.0 else F.leaky_relu(y, self.negative_slope)

    def _global_batch_norm(self, x: Tensor) -> Tensor:
        xf = x.float()
        count = torch.full((1,), xf.numel() / xf.shape[1], dtype=torch.float32, device=x.device)
        sums = _AllReduceSum.apply(torch.cat([xf.sum((0, 2, 3)), xf.square().sum((0, 2, 3)), count]))
        c, n = self.num_features, sums[-1]
        mean = sums[:c] / n
        var = (sums[c : 2 * c] / n - mean.square()).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                unbiased = var.detach() * n / (n - 1).clamp_min(1.0)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        scale = torch.rsqrt(var + self.eps)
        shift = -mean * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        return (xf * scale[:, None, None] + shift[:, None, None]).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, negative_slope={self.negative_slope}"


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Returns ``module`` with every 2-d batch norm (nn.BatchNorm2d, deepfast's BatchNormLeakyReLU2d and
    the models' ReferenceBatchNormLeakyReLU2d) replaced by a SyncBatchNormLeakyReLU2d with the same state and
    activation (``negative_slope`` attribute, none = identity). Children are replaced in place."""
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNormLeakyReLU2d):
        if module.running_mean is None or not module.affine:
            raise ValueError(f"convert_sync_batchnorm needs affine batch norms with running stats, got {module}")
        sync = SyncBatchNormLeakyReLU2d(
            module.num_features, getattr(module, "negative_slope", 1.0), module.eps, module.momentum
        )
        sync.load_state_dict(module.state_dict())
        sync.train(module.training)
        return sync.to(module.weight.device, module.weight.dtype)
    for name, child in module.named_children():
        setattr(module, name, convert_sync_batchnorm(child))
    return module
