"""deepfast.nn BatchNormLeakyReLU2d, InstanceNormLeakyReLU2d, ConvNormAct, convert, fuse_conv_bn."""

import copy

import pytest
import torch
from torch import nn

import deepfast
from conftest import assert_compiles_fullgraph
from deepfast._memory import STACKS, conv_stack, saved_bytes
from deepfast.nn import BatchNormLeakyReLU2d, ConvNormAct, InstanceNormLeakyReLU2d, convert, fuse_conv_bn

TOL = dict(rtol=3e-5, atol=3e-5)


def randomize(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    return module


def step(model, x, grad):
    """Forward + backward; returns the output and the gradients of x and of every parameter."""
    x = x.detach().requires_grad_()
    y = model(x)
    params = list(model.parameters())
    grads = torch.autograd.grad(y, [x, *params], grad)
    return y, grads


def assert_same_steps(fused, pair, shape, device, channels_last=False, steps=3):
    """Several training steps then one eval step: outputs, gradients and buffers equal."""
    for i in range(steps + 1):
        training = i < steps
        fused.train(training), pair.train(training)
        x = torch.randn(shape, device=device) * 2 + 0.5
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        grad = torch.randn(shape, device=device)
        (y1, g1), (y2, g2) = step(fused, x, grad), step(pair, x, grad)
        torch.testing.assert_close(y1, y2, **TOL)
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, **TOL)
        for (name, a), b in zip(fused.named_buffers(), pair.buffers()):
            torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(momentum=None), dict(affine=False), dict(track_running_stats=False), dict(negative_slope=0.0)],
    ids=["default", "cumulative", "no-affine", "no-running-stats", "relu"],
)
def test_batch_norm_layer_matches_nn(backend_device, kwargs, channels_last):
    backend, device = backend_device
    slope = kwargs.pop("negative_slope", 0.2)
    torch.manual_seed(0)
    pair = randomize(nn.Sequential(nn.BatchNorm2d(6, **kwargs), nn.LeakyReLU(slope))).to(device)
    fused = BatchNormLeakyReLU2d(6, slope, **kwargs).to(device)
    fused.load_state_dict(pair[0].state_dict())
    with deepfast.use_backend(backend):
        assert_same_steps(fused, pair, (4, 6, 5, 7), device, channels_last)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_instance_norm_layer_matches_nn(backend_device, affine, slope):
    backend, device = backend_device
    torch.manual_seed(0)
    act = nn.LeakyReLU(slope) if slope else nn.ReLU()
    pair = randomize(nn.Sequential(nn.InstanceNorm2d(5, affine=affine), act)).to(device)
    fused = InstanceNormLeakyReLU2d(5, slope, affine=affine).to(device)
    fused.load_state_dict(pair[0].state_dict())
    with deepfast.use_backend(backend):
        assert_same_steps(fused, pair, (3, 5, 6, 4), device, steps=1)


@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_inplace_layers_match_nn(backend_device, norm):
    backend, device = backend_device
    torch.manual_seed(0)
    standard = nn.BatchNorm2d(6) if norm == "batch" else nn.InstanceNorm2d(6, affine=True)
    pair = randomize(nn.Sequential(standard, nn.LeakyReLU(0.1))).to(device)
    layer = BatchNormLeakyReLU2d if norm == "batch" else InstanceNormLeakyReLU2d
    fused = layer(6, 0.1, inplace=True, **({} if norm == "batch" else dict(affine=True))).to(device)
    fused.load_state_dict(pair[0].state_dict())
    with deepfast.use_backend(backend):
        assert_same_steps(fused, pair, (4, 6, 5, 5), device, steps=2)


def test_state_dict_round_trips():
    torch.manual_seed(0)
    bn = randomize(nn.BatchNorm2d(4))
    bn.train()(torch.randn(3, 4, 2, 2))
    fused = BatchNormLeakyReLU2d(4)
    fused.load_state_dict(bn.state_dict())
    back = nn.BatchNorm2d(4)
    back.load_state_dict(fused.state_dict())
    for a, b in zip(bn.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)
    assert fused.num_batches_tracked.item() == 1
    inorm = randomize(nn.InstanceNorm2d(4, affine=True))
    fused_in = InstanceNormLeakyReLU2d(4, affine=True)
    fused_in.load_state_dict(inorm.state_dict())
    assert fused_in.state_dict().keys() == inorm.state_dict().keys()
    assert torch.equal(fused_in.weight, inorm.weight)


def test_layers_reject_bad_input():
    with pytest.raises(ValueError, match="expected 4D input"):
        BatchNormLeakyReLU2d(3)(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="inplace=True needs negative_slope > 0"):
        InstanceNormLeakyReLU2d(3, 0.0, inplace=True)(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="norm must be one of"):
        ConvNormAct(3, 4, 3, norm="layer")


def test_torch_compile_fullgraph_layer(backend_device):
    backend, device = backend_device
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, bias=False), BatchNormLeakyReLU2d(6, inplace=True)).to(device)
    reference = copy.deepcopy(model)
    x = torch.randn(2, 3, 8, 8, device=device)
    assert_compiles_fullgraph(lambda x: model(x).square().sum(), (x,), backend, "norm_leaky_relu")
    for _ in range(3):  # as many training steps as the model took
        reference(x)
    torch.testing.assert_close(model[1].running_mean, reference[1].running_mean, **TOL)


# --- ConvNormAct, convert, fuse_conv_bn --------------------------------------------------------------


@pytest.mark.parametrize("norm", ["batch", "instance", None])
@pytest.mark.parametrize("transposed", [False, True])
def test_conv_norm_act_matches_sequential(norm, transposed):
    torch.manual_seed(0)
    block = ConvNormAct(3, 8, 4, 2, 1, transposed=transposed, norm=norm, negative_slope=0.2)
    conv = (
        nn.ConvTranspose2d(3, 8, 4, 2, 1, bias=norm is None)
        if transposed
        else nn.Conv2d(3, 8, 4, 2, 1, bias=norm is None)
    )
    conv.load_state_dict(block.conv.state_dict())
    layers = [conv]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(8))
    elif norm == "instance":
        layers.append(nn.InstanceNorm2d(8))
    pair = nn.Sequential(*layers, nn.LeakyReLU(0.2))
    x = torch.randn(2, 3, 8, 8)
    y = block(x)
    assert y.shape == (2, 8, 16, 16) if transposed else (2, 8, 4, 4)
    torch.testing.assert_close(y, pair(x), **TOL)


class Named(nn.Module):
    """A pix2pix-style block: conv, norm, act as named children."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


def dcgan_like():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.LeakyReLU(0.2, inplace=True),
        Named(),
        nn.ConvTranspose2d(6, 5, 4, 2, 1),
        nn.InstanceNorm2d(5, affine=True),
        nn.LeakyReLU(0.1),
        nn.Conv2d(5, 5, 1),
        nn.BatchNorm2d(5),
        nn.Tanh(),  # not followed by an activation: stays
    )


def test_convert_replaces_norm_leaky_relu_runs_and_keeps_weights():
    torch.manual_seed(0)
    model = randomize(dcgan_like())
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m(torch.randn(4, m.num_features, 3, 3))  # running statistics that are not 0 and 1
    fused = convert(copy.deepcopy(model))
    assert isinstance(fused[1], BatchNormLeakyReLU2d) and isinstance(fused[2], nn.Identity)
    assert isinstance(fused[3].bn, BatchNormLeakyReLU2d) and fused[3].bn.negative_slope == 0.0
    assert isinstance(fused[5], InstanceNormLeakyReLU2d) and fused[5].negative_slope == 0.1
    assert type(fused[8]) is nn.BatchNorm2d
    assert fused.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(2, 3, 6, 6)
    for training in (True, False):
        model.train(training), fused.train(training)
        torch.testing.assert_close(fused(x), model(x), **TOL)


def cyclegan_like():
    """ResNet-generator pieces: reflection padding, conv, instance norm, ReLU (the act as a named child)."""
    return nn.Sequential(
        nn.ReflectionPad2d(3),
        nn.Conv2d(3, 8, 7),
        nn.InstanceNorm2d(8),
        nn.ReLU(True),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.InstanceNorm2d(8),
        nn.ReLU(True),
        nn.ReflectionPad2d(1),
        nn.Conv2d(8, 3, 3),
        nn.Tanh(),
    )


@pytest.mark.parametrize("build", [dcgan_like, cyclegan_like])
def test_convert_keeps_outputs_and_gradients(build):
    torch.manual_seed(1)
    model = randomize(build()).train()
    fused = convert(copy.deepcopy(model)).train()
    assert any(isinstance(m, (BatchNormLeakyReLU2d, InstanceNormLeakyReLU2d)) for m in fused.modules())
    x = torch.randn(2, 3, 12, 12)
    outputs = []
    for net in (model, fused):
        net.zero_grad()
        y = net(x)
        (y * torch.linspace(-1, 2, y.numel()).view_as(y)).sum().backward()
        outputs.append((y, {k: p.grad for k, p in net.named_parameters()}))
    (y_ref, grads_ref), (y_fused, grads_fused) = outputs
    torch.testing.assert_close(y_fused, y_ref, **TOL)
    assert grads_fused.keys() == grads_ref.keys()
    for name in grads_ref:
        torch.testing.assert_close(grads_fused[name], grads_ref[name], rtol=1e-4, atol=1e-4, msg=name)


def test_fuse_conv_bn_folds_eval_batch_norm():
    torch.manual_seed(0)
    model = randomize(dcgan_like())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(), m.running_var.uniform_(0.5, 2.0)
    with pytest.raises(ValueError, match="model.eval"):
        fuse_conv_bn(copy.deepcopy(model))
    model.eval()
    folded = fuse_conv_bn(convert(copy.deepcopy(model)))
    assert not any(isinstance(m, (nn.BatchNorm2d, BatchNormLeakyReLU2d)) for m in folded.modules())
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(folded(x), model(x), **TOL)


# --- activation memory -------------------------------------------------------------------------------


def test_inplace_mode_saves_activation_memory():
    """Per block, eager BN + LeakyReLU keeps x and z besides the next conv's input; the fused layer keeps
    x; in-place mode keeps y only, which the next conv keeps anyway."""
    x = torch.randn(2, 32, 16, 16, requires_grad=True)  # the stack of the benchmark, on a smaller input
    saved = {name: saved_bytes(conv_stack(name), x) for name in STACKS}
    activation = x.numel() * 4
    part = {
        name: round((saved[name] - saved["convs alone"]) / activation) for name in ("eager", "fused", "fused inplace")
    }
    # in activations (rounded: BN also saves its per-channel statistics), 6 blocks: eager x and z of
    # each; fused x; in-place only the last y (the next conv saves the others anyway)
    assert part == {"eager": 12, "fused": 6, "fused inplace": 1}, part


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: one ReLU module, called twice (after bn1, and after the sum)."""

    def __init__(self, c=6):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class Untraceable(nn.Module):
    """A forward with data-dependent control flow (torch.fx cannot trace it) around a Sequential."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.shared = nn.ReLU()
        self.tail = nn.Sequential(nn.Conv2d(6, 6, 1), nn.BatchNorm2d(6), self.shared)

    def forward(self, x):
        y = self.body(x)
        if y.sum() > 0:
            y = self.shared(y)
        return self.tail(y)


def assert_same_model(model, converted, x, modes=(True, False)):
    for training in modes:
        model.train(training), converted.train(training)
        torch.testing.assert_close(converted(x), model(x), **TOL)


@pytest.mark.parametrize("transform", [convert, lambda m: fuse_conv_bn(m.eval())], ids=["convert", "fuse_conv_bn"])
def test_transforms_change_only_proven_chains(transform):
    """An activation used twice is left as it is (fusing its first use made the second an Identity);
    conv1 -> bn1 still converts; in an untraceable model only nn.Sequential runs whose modules are used
    nowhere else do."""
    torch.manual_seed(0)
    modes = (True, False) if transform is convert else (False,)  # a folded BatchNorm is for eval only
    block = randomize(BasicBlock()).train()
    converted = transform(copy.deepcopy(block))
    x = torch.randn(2, 6, 5, 5)
    assert_same_model(block, converted, x, modes)
    if transform is convert:
        assert isinstance(converted.relu, nn.ReLU) and type(converted.bn1) is nn.BatchNorm2d
    else:
        assert isinstance(converted.bn1, nn.Identity) and isinstance(converted.bn2, nn.Identity)
    model = randomize(Untraceable()).train()
    converted = transform(copy.deepcopy(model))
    assert_same_model(model, converted, torch.randn(2, 6, 5, 5), modes)
    if transform is convert:
        assert isinstance(converted.body[1], BatchNormLeakyReLU2d) and isinstance(converted.body[2], nn.Identity)
        assert type(converted.tail[1]) is nn.BatchNorm2d and converted.tail[2] is converted.shared
