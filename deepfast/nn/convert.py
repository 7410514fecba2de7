"""Model transforms: fuse the norm + activation pairs of an existing model, fold eval BatchNorm into convs.

Both work on the children of every module, in registration order: inside an nn.Sequential that is
the order they run in; for the named children of another module it is assumed to be (a module whose
forward calls ``act(bn(conv(x)))`` registers conv, bn, act in that order, as DCGAN, pix2pix and
CycleGAN code does). Both modify the model in place and return it.
"""

from __future__ import annotations

import torch
from torch import nn

from deepfast.nn.norm_act import BatchNormLeakyReLU2d, InstanceNormLeakyReLU2d

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def _slope(act: nn.Module) -> float | None:
    if isinstance(act, nn.ReLU):
        return 0.0
    if isinstance(act, nn.LeakyReLU) and act.negative_slope >= 0:
        return float(act.negative_slope)
    return None


def _fused(norm: nn.Module, slope: float) -> nn.Module | None:
    """The fused layer equivalent to norm followed by LeakyReLU(slope), its state copied; None if none is."""
    if type(norm) is nn.BatchNorm2d:
        layer = BatchNormLeakyReLU2d(norm.num_features, slope, norm.eps, norm.momentum, norm.affine,
                                     norm.track_running_stats)
    elif type(norm) is nn.InstanceNorm2d and not norm.track_running_stats:
        layer = InstanceNormLeakyReLU2d(norm.num_features, slope, norm.eps, norm.affine)
    else:
        return None
    state = norm.state_dict()
    if state:
        any_tensor = next(iter(state.values()))
        layer.to(device=any_tensor.device)
        if any_tensor.is_floating_point():
            layer.to(dtype=any_tensor.dtype)
    layer.load_state_dict(state)
    layer.train(norm.training)
    return layer


def convert(model: nn.Module) -> nn.Module:
    """Replace every Conv -> BatchNorm2d / InstanceNorm2d -> LeakyReLU / ReLU run of children with
    Conv -> fused layer -> nn.Identity (the Identity keeps the indices, and so the state_dict keys, of
    an nn.Sequential). BatchNorm weights, biases and running statistics are carried over; instance
    norms with track_running_stats=True are left as they are."""
    for module in model.modules():
        names = list(module._modules)
        for i in range(len(names) - 2):
            conv, norm, act = (module._modules[n] for n in names[i : i + 3])
            slope = _slope(act)
            if not isinstance(conv, _CONVS) or slope is None:
                continue
            fused = _fused(norm, slope)
            if fused is not None:
                module._modules[names[i + 1]] = fused
                module._modules[names[i + 2]] = nn.Identity()
    return model


@torch.no_grad()
def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d (or BatchNormLeakyReLU2d) that follows a Conv2d / ConvTranspose2d into the
    conv's weight and bias, for inference: the model must be in eval mode and the norms must have
    running statistics. A BatchNorm2d becomes nn.Identity, a BatchNormLeakyReLU2d its activation.

        conv'.weight = conv.weight * s (per output channel),  s = weight / sqrt(running_var + eps)
        conv'.bias   = (conv.bias - running_mean) * s + bias
    """
    if model.training:
        raise ValueError("fuse_conv_bn folds the running statistics: call model.eval() first")
    for module in model.modules():
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if not isinstance(conv, _CONVS) or type(bn) not in (nn.BatchNorm2d, BatchNormLeakyReLU2d):
                continue
            if bn.running_mean is None:
                continue
            scale = torch.rsqrt(bn.running_var + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight
            shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0.0)
            out_dim = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
            view = [1] * conv.weight.dim()
            view[out_dim] = -1
            conv.weight.mul_(scale.view(view).to(conv.weight.dtype))
            bias = shift if conv.bias is None else conv.bias * scale + shift
            conv.bias = nn.Parameter(bias.to(conv.weight.dtype))
            if isinstance(bn, BatchNormLeakyReLU2d):
                act = nn.LeakyReLU(bn.negative_slope) if bn.negative_slope else nn.ReLU()
            else:
                act = nn.Identity()
            module._modules[second] = act
    return model
