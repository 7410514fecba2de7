"""Model transforms: fuse the norm + activation pairs of an existing model, fold eval BatchNorm into convs.

Both change only what they can prove is a chain conv -> norm (-> act): each module's output is the
next one's only input and used nowhere else, and each module runs once per forward (one call, one
name in the model). The proof comes from the model's graph (torch.fx); where the model cannot be
traced, from the order of the children of nn.Sequential containers, the one place where it is the
call order. Anything else is left as it is: an activation called twice (torchvision's ResNet
BasicBlock calls ``self.relu`` twice), named children whose forward calls them in another order, a
conv whose output is also used elsewhere. Both modify the model in place and return it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
from torch import fx, nn

from deepfast.nn.norm_leaky_relu import BatchNormLeakyReLU2d, InstanceNormLeakyReLU2d

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
        layer = BatchNormLeakyReLU2d(
            norm.num_features, slope, norm.eps, norm.momentum, norm.affine, norm.track_running_stats
        )
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


Link = tuple[nn.Module, str]  # (parent module, child name): where a module of a chain is registered
Test = Callable[[nn.Module], bool]


class _Tracer(fx.Tracer):
    """torch.fx's tracer, with deepfast's fused layers as leaves (as torch.nn's own modules are)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (BatchNormLeakyReLU2d, InstanceNormLeakyReLU2d)) or super().is_leaf_module(m, qualname)


def _chains(model: nn.Module, tests: tuple[Test, ...]) -> list[list[Link]]:
    """The proven chains of modules m_1 -> ... -> m_k with tests[i](m_i) true (see the module docstring)."""
    names = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    try:
        graph = _Tracer().trace(model)
    except Exception:  # noqa: BLE001 - an untraceable model: only nn.Sequential order is a proof
        return _sequential_chains(model, tests, names)
    calls = Counter(id(model.get_submodule(n.target)) for n in graph.nodes if n.op == "call_module")

    def runs_once(node: fx.Node, test: Test) -> bool:
        if node.op != "call_module":
            return False
        module = model.get_submodule(node.target)
        return names[id(module)] == 1 and calls[id(module)] == 1 and test(module)

    def link(node: fx.Node) -> Link:
        parent, _, name = node.target.rpartition(".")
        return model.get_submodule(parent), name

    chains = []
    for end in graph.nodes:
        nodes = [end]
        while len(nodes) < len(tests):  # back through sole inputs that feed nothing else
            node = nodes[0]
            if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
                break
            if len(node.args[0].users) != 1:
                break
            nodes.insert(0, node.args[0])
        if len(nodes) == len(tests) and all(runs_once(n, test) for n, test in zip(nodes, tests)):
            chains.append([link(n) for n in nodes])
    return chains


def _sequential_chains(model: nn.Module, tests: tuple[Test, ...], names: Counter) -> list[list[Link]]:
    chains = []
    for parent in model.modules():
        if type(parent) is not nn.Sequential:
            continue
        children = list(parent._modules.items())
        for i in range(len(children) - len(tests) + 1):
            window = children[i : i + len(tests)]
            if all(test(m) and names[id(m)] == 1 for test, (_, m) in zip(tests, window)):
                chains.append([(parent, name) for name, _ in window])
    return chains


def _get(link: Link) -> nn.Module:
    return link[0]._modules[link[1]]


def _set(link: Link, module: nn.Module) -> None:
    link[0]._modules[link[1]] = module


def convert(model: nn.Module) -> nn.Module:
    """Replace every proven Conv -> BatchNorm2d / InstanceNorm2d -> LeakyReLU / ReLU chain with
    Conv -> fused layer -> nn.Identity (the Identity keeps the indices, and so the state_dict keys, of
    an nn.Sequential). BatchNorm weights, biases and running statistics are carried over; instance
    norms with track_running_stats=True, and anything not proven a chain, are left as they are."""
    tests = (lambda m: isinstance(m, _CONVS), lambda m: _fused(m, 0.0) is not None, lambda m: _slope(m) is not None)
    for conv, norm, act in _chains(model, tests):
        _set(norm, _fused(_get(norm), _slope(_get(act))))
        _set(act, nn.Identity())
    return model


@torch.no_grad()
def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d (or BatchNormLeakyReLU2d) proven to take a Conv2d / ConvTranspose2d's output
    alone into the conv's weight and bias, for inference: the model must be in eval mode and the norms
    must have running statistics. A BatchNorm2d becomes nn.Identity, a BatchNormLeakyReLU2d its activation.

        conv'.weight = conv.weight * s (per output channel),  s = weight / sqrt(running_var + eps)
        conv'.bias   = (conv.bias - running_mean) * s + bias
    """
    if model.training:
        raise ValueError("fuse_conv_bn folds the running statistics: call model.eval() first")
    tests = (
        lambda m: isinstance(m, _CONVS),
        lambda m: type(m) in (nn.BatchNorm2d, BatchNormLeakyReLU2d) and m.running_mean is not None,
    )
    for conv_link, bn_link in _chains(model, tests):
        conv, bn = _get(conv_link), _get(bn_link)
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
        _set(bn_link, act)
    return model
