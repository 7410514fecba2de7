"""deepfast.models: shapes, parameter counts, fused == reference (outputs, gradients, buffers), VAE KL."""

import pytest
import torch
from torch import nn

from deepfast.models import (
    VAE,
    Autoencoder,
    ConditionalDiscriminator,
    ConditionalGenerator,
    Discriminator,
    Generator,
    LeNet,
    PatchDiscriminator,
    PixelGenerator,
    ResNet18,
    ResnetGenerator,
    UNet,
)
from deepfast.models._blocks import upsample_block
from deepfast.nn import BatchNormLeakyReLU2d, InstanceNormLeakyReLU2d

TOL = dict(rtol=1e-4, atol=1e-4)
GRAD_TOL = 1e-4


class WithLabels(nn.Module):
    """A conditional model called with fixed labels: model(x, labels) as model(x)."""

    def __init__(self, model, labels):
        super().__init__()
        self.model, self.labels = model, labels

    def forward(self, x):
        return self.model(x, self.labels)


LABELS = torch.tensor([3, 0, 9])

# (name, constructor kwargs -> model, input shape, output shape); small widths to stay fast.
CASES = [
    ("vae32", lambda impl: VAE(1, 32, latent_dim=8, width=8, impl=impl), (2, 1, 32, 32), (2, 1, 32, 32)),
    ("vae64", lambda impl: VAE(3, 64, latent_dim=8, width=8, impl=impl), (2, 3, 64, 64), (2, 3, 64, 64)),
    ("gen32", lambda impl: Generator(nz=16, ngf=8, image_size=32, impl=impl), (3, 16), (3, 3, 32, 32)),
    ("gen64", lambda impl: Generator(nz=16, ngf=8, image_size=64, impl=impl), (3, 16, 1, 1), (3, 3, 64, 64)),
    (
        "gen32resize",
        lambda impl: Generator(nz=16, ngf=8, image_size=32, impl=impl, upsample="resize"),
        (3, 16),
        (3, 3, 32, 32),
    ),
    (
        "cgen32",
        lambda impl: WithLabels(ConditionalGenerator(10, nz=16, ngf=8, nc=1, image_size=32, impl=impl), LABELS),
        (3, 16),
        (3, 1, 32, 32),
    ),
    (
        "cdisc64",
        lambda impl: WithLabels(ConditionalDiscriminator(10, ndf=8, image_size=64, impl=impl), LABELS),
        (3, 3, 64, 64),
        (3,),
    ),
    (
        "gen8extra",
        lambda impl: Generator(nz=16, ngf=8, nc=1, image_size=8, impl=impl, extra_layers=2),
        (3, 16),
        (3, 1, 8, 8),
    ),
    (
        "gen16",
        lambda impl: Generator(nz=16, ngf=8, image_size=16, impl=impl, upsample="resize"),
        (3, 16),
        (3, 3, 16, 16),
    ),
    (
        "disc8extra",
        lambda impl: Discriminator(ndf=8, nc=1, image_size=8, impl=impl, extra_layers=2),
        (3, 1, 8, 8),
        (3,),
    ),
    (
        "disc8sn",
        lambda impl: Discriminator(ndf=8, nc=1, image_size=8, impl=impl, extra_layers=1, spectral_norm=True),
        (3, 1, 8, 8),
        (3,),
    ),
    ("disc16", lambda impl: Discriminator(ndf=8, image_size=16, impl=impl), (3, 3, 16, 16), (3,)),
    ("disc32", lambda impl: Discriminator(ndf=8, image_size=32, impl=impl), (3, 3, 32, 32), (3,)),
    ("disc64", lambda impl: Discriminator(ndf=8, image_size=64, impl=impl), (3, 3, 64, 64), (3,)),
    ("resgen6", lambda impl: ResnetGenerator(ngf=8, n_blocks=6, impl=impl), (2, 3, 32, 32), (2, 3, 32, 32)),
    ("resgen9", lambda impl: ResnetGenerator(ngf=4, n_blocks=9, impl=impl), (1, 3, 24, 24), (1, 3, 24, 24)),
    (
        "resgen_resize",
        lambda impl: ResnetGenerator(ngf=8, n_blocks=2, impl=impl, upsample="resize"),
        (2, 3, 20, 28),
        (2, 3, 20, 28),
    ),
    (
        "cgen16extra",
        lambda impl: WithLabels(
            ConditionalGenerator(10, nz=16, ngf=8, nc=1, image_size=16, impl=impl, extra_layers=1), LABELS
        ),
        (3, 16),
        (3, 1, 16, 16),
    ),
    (
        "cdisc16extra",
        lambda impl: WithLabels(
            ConditionalDiscriminator(10, ndf=8, nc=1, image_size=16, impl=impl, extra_layers=1), LABELS
        ),
        (3, 1, 16, 16),
        (3,),
    ),
    ("patch", lambda impl: PatchDiscriminator(ndf=8, impl=impl), (2, 3, 64, 64), (2, 1, 6, 6)),
    ("ae", lambda impl: Autoencoder(1, 32, latent_dim=8, width=8, impl=impl), (2, 1, 32, 32), (2, 1, 32, 32)),
    ("unet", lambda impl: UNet(1, 2, width=4, depth=3, impl=impl), (2, 1, 32, 32), (2, 2, 32, 32)),
    ("lenet", lambda impl: LeNet(impl=impl), (4, 1, 32, 32), (4, 10)),
    ("resnet18", lambda impl: ResNet18(width=4, impl=impl), (2, 3, 32, 32), (2, 10)),
]
IDS = [c[0] for c in CASES]


def output(model, x):
    out = model(x)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name, build, in_shape, out_shape", CASES, ids=IDS)
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_shapes(name, build, in_shape, out_shape, impl):
    model = build(impl)
    with torch.no_grad():
        assert output(model, torch.rand(in_shape)).shape == out_shape
        assert output(model.eval(), torch.rand(in_shape)).shape == out_shape


@pytest.mark.parametrize("name, build, in_shape, out_shape", CASES, ids=IDS)
def test_fused_matches_reference(name, build, in_shape, out_shape):
    """The reference state_dict loads into the fused model (same keys); two training steps then one
    eval step give the same outputs, parameter gradients and buffers."""
    torch.manual_seed(0)
    ref = build("reference")
    fused = build("fused")
    fused_layers = (BatchNormLeakyReLU2d, InstanceNormLeakyReLU2d)
    assert any(isinstance(m, fused_layers) for m in fused.modules())
    assert not any(isinstance(m, fused_layers) for m in ref.modules())
    assert list(fused.state_dict()) == list(ref.state_dict())
    fused.load_state_dict(ref.state_dict())
    for training in (True, True, False):
        ref.train(training), fused.train(training)
        x = torch.rand(in_shape)
        weight = torch.randn(out_shape)
        grads = []
        outs = []
        for model in (ref, fused):
            torch.manual_seed(1)  # the VAE draws its noise
            y = output(model, x)
            params = list(model.parameters())
            grads.append(torch.autograd.grad((y * weight).sum(), params))
            outs.append(y)
        torch.testing.assert_close(outs[1], outs[0], **TOL)
        # Float32 sums in another order: gradients compared relative to the largest one (the conv biases
        # before an instance norm have a gradient of zero, computed as rounding noise by both).
        atol = GRAD_TOL * max(g.abs().max().item() for g in grads[0])
        for (pname, _), g_fused, g_ref in zip(ref.named_parameters(), grads[1], grads[0]):
            torch.testing.assert_close(g_fused, g_ref, rtol=GRAD_TOL, atol=atol, msg=lambda m: f"{pname}: {m}")
        for (bname, b_ref), b_fused in zip(ref.named_buffers(), fused.buffers()):
            torch.testing.assert_close(b_fused, b_ref, **TOL, msg=lambda m: f"{bname}: {m}")


@pytest.mark.parametrize("extra_layers", [0, 2])
def test_spectral_norm_divides_every_discriminator_conv_by_its_largest_singular_value(extra_layers):
    torch.manual_seed(0)
    d = ConditionalDiscriminator(10, ndf=8, nc=1, image_size=16, extra_layers=extra_layers, spectral_norm=True)
    for _ in range(40):  # one power iteration per training forward
        d(torch.rand(2, 1, 16, 16), LABELS[:2])
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 + extra_layers
    for m in convs:
        assert m.parametrizations.weight.original.shape == m.weight.shape
        sigma = torch.linalg.matrix_norm(m.weight.detach().double().flatten(1), ord=2)
        assert abs(sigma.item() - 1) < 1e-2  # without it: about 0.1 (the N(0, 0.02) init)
    with pytest.raises(ValueError, match="spectral_norm"):
        Discriminator(spectral_norm=1)


def reference_count(*layers: nn.Module) -> int:
    return sum(p.numel() for layer in layers for p in layer.parameters())


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_dcgan_parameter_counts():
    """The published DCGAN counts (nz=100, ngf=ndf=64, 3x64x64): G 3,576,704, D 2,765,568, recomputed
    from the nn layers of the PyTorch DCGAN example."""
    g_ref = reference_count(
        nn.ConvTranspose2d(100, 512, 4, 1, 0, bias=False),
        nn.BatchNorm2d(512),
        nn.ConvTranspose2d(512, 256, 4, 2, 1, bias=False),
        nn.BatchNorm2d(256),
        nn.ConvTranspose2d(256, 128, 4, 2, 1, bias=False),
        nn.BatchNorm2d(128),
        nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False),
        nn.BatchNorm2d(64),
        nn.ConvTranspose2d(64, 3, 4, 2, 1, bias=False),
    )
    d_ref = reference_count(
        nn.Conv2d(3, 64, 4, 2, 1, bias=False),
        nn.Conv2d(64, 128, 4, 2, 1, bias=False),
        nn.BatchNorm2d(128),
        nn.Conv2d(128, 256, 4, 2, 1, bias=False),
        nn.BatchNorm2d(256),
        nn.Conv2d(256, 512, 4, 2, 1, bias=False),
        nn.BatchNorm2d(512),
        nn.Conv2d(512, 1, 4, 1, 0, bias=False),
    )
    assert g_ref == 3_576_704 and d_ref == 2_765_568
    for impl in ("fused", "reference"):
        assert count(Generator(impl=impl)) == g_ref
        assert count(Discriminator(impl=impl)) == d_ref
    assert count(Generator(image_size=32)) == 1_068_928  # the 64x64 G without its 512-channel layer
    assert count(Discriminator(image_size=32)) == 663_296


def test_dcgan_extra_layers_are_3x3_convs_at_the_last_hidden_size():
    """extra_layers=k adds k 3x3 stride-1 conv + BatchNorm blocks (no conv bias) where G's last hidden map
    is (S/2) and after D's first conv, as the n_extra_layers of the WGAN reference code's DCGAN."""
    extra = reference_count(nn.Conv2d(32, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32))
    for k in (1, 3):
        assert count(Generator(nz=10, ngf=32, nc=1, image_size=16, extra_layers=k)) == (
            count(Generator(nz=10, ngf=32, nc=1, image_size=16)) + k * extra
        )
        assert count(Discriminator(ndf=32, nc=1, image_size=16, extra_layers=k)) == (
            count(Discriminator(ndf=32, nc=1, image_size=16)) + k * extra
        )
    shapes = []
    g = Generator(nz=10, ngf=32, nc=1, image_size=16, extra_layers=2)
    hooks = [
        m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
        for m in g.modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    g(torch.randn(2, 10))
    assert shapes == [(2, 32, 8, 8)] * 2
    for h in hooks:
        h.remove()


def test_cyclegan_parameter_counts():
    """ngf=ndf=64, RGB: ResnetGenerator 11,378,179 (9 blocks) / 7,837,699 (6), PatchDiscriminator
    2,764,737: the counts of the CycleGAN reference code, recomputed from its nn layers."""
    head = [nn.Conv2d(3, 64, 7), nn.Conv2d(64, 128, 3, 2, 1), nn.Conv2d(128, 256, 3, 2, 1)]
    block = [nn.Conv2d(256, 256, 3), nn.Conv2d(256, 256, 3)]
    tail = [nn.ConvTranspose2d(256, 128, 3, 2, 1, 1), nn.ConvTranspose2d(128, 64, 3, 2, 1, 1), nn.Conv2d(64, 3, 7)]
    for n_blocks, expected in ((9, 11_378_179), (6, 7_837_699)):
        assert reference_count(*head, *tail) + n_blocks * reference_count(*block) == expected
        assert count(ResnetGenerator(n_blocks=n_blocks)) == expected
        assert count(ResnetGenerator(n_blocks=n_blocks, upsample="resize")) == expected  # 3x3 kernels either way
    d_ref = reference_count(
        nn.Conv2d(3, 64, 4, 2, 1),
        nn.Conv2d(64, 128, 4, 2, 1),
        nn.Conv2d(128, 256, 4, 2, 1),
        nn.Conv2d(256, 512, 4, 1, 1),
        nn.Conv2d(512, 1, 4, 1, 1),
    )
    assert d_ref == 2_764_737 == count(PatchDiscriminator())


def test_classifier_parameter_counts():
    """ResNet-18 for CIFAR: 11,173,962; LeNet-5 with BatchNorm (conv biases dropped): 61,728."""
    assert count(ResNet18()) == 11_173_962
    lenet_ref = reference_count(
        nn.Conv2d(1, 6, 5, bias=False),
        nn.BatchNorm2d(6),
        nn.Conv2d(6, 16, 5, bias=False),
        nn.BatchNorm2d(16),
        nn.Linear(400, 120),
        nn.Linear(120, 84),
        nn.Linear(84, 10),
    )
    assert lenet_ref == 61_728 == count(LeNet())


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_vae_kl_and_sample(impl):
    torch.manual_seed(0)
    vae = VAE(1, 32, latent_dim=8, width=8, impl=impl)
    assert vae.kl is None
    recon, mu, logvar = vae(torch.rand(4, 1, 32, 32))
    expected = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / 4
    torch.testing.assert_close(vae.kl, expected, rtol=1e-5, atol=1e-5)
    assert vae.kl.requires_grad
    vae.eval()
    x = torch.rand(2, 1, 32, 32)
    mu, logvar = vae.encode(x)
    torch.testing.assert_close(vae(x)[0], vae.decode(mu))  # eval: z = mu
    samples = vae.sample(5)
    assert samples.shape == (5, 1, 32, 32) and not samples.requires_grad
    assert samples.min() >= 0 and samples.max() <= 1


def test_dcgan_init():
    g = Generator(ngf=16)
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert abs(w.mean()) < 2e-3 and abs(w.std() - 0.02) < 1e-3
    norm_w = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)])
    assert abs(norm_w.mean() - 1) < 1e-2


@pytest.mark.parametrize("bad", [dict(impl="fast"), dict(image_size=48)])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        VAE(**bad)
    with pytest.raises(ValueError):
        Generator(**bad)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_extra_layers_must_be_a_count(bad):
    for cls in (Generator, Discriminator, ConditionalGenerator, ConditionalDiscriminator):
        with pytest.raises(ValueError, match="extra_layers"):
            cls(image_size=8, extra_layers=bad)


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_resize_upsampling_has_no_checkerboard(impl):
    """Odena et al. 2016: from a constant input, a stride-2 transposed conv whose kernel does not divide
    evenly by the stride gives a periodic pattern; resize-convolution gives a constant interior, for
    any weights."""
    torch.manual_seed(0)
    x = torch.full((1, 4, 6, 6), 0.7)
    for mode, kernel, periodic in (("transposed", 3, True), ("resize", 3, False)):
        block = upsample_block(impl, 4, 5, mode, kernel_size=kernel, norm=None, negative_slope=0.1).eval()
        with torch.no_grad():
            y = block.conv(x) if mode == "transposed" else block[1].conv(block[0](x))
        assert y.shape == (1, 5, 12, 12)
        inner = y[..., 2:-2, 2:-2]
        spread = (inner - inner.mean((-2, -1), keepdim=True)).abs().max().item()
        assert (spread > 1e-3) == periodic, f"{mode}: interior spread {spread}"
    with pytest.raises(ValueError, match="upsample"):
        upsample_block(impl, 4, 5, "bilinear")


def test_conditional_gan_uses_the_labels_and_checks_them():
    torch.manual_seed(0)
    g = ConditionalGenerator(10, nz=8, ngf=8, nc=1, image_size=32).eval()
    d = ConditionalDiscriminator(10, ndf=8, nc=1, image_size=32)
    z = torch.randn(4, 8)
    with torch.no_grad():
        a, b = g(z, torch.tensor([1, 1, 1, 1])), g(z, torch.tensor([2, 2, 2, 2]))
    assert a.shape == (4, 1, 32, 32) and (a - b).abs().max() > 1e-4
    x = torch.randn(4, 1, 32, 32)
    out = d(x, torch.tensor([0, 1, 2, 3]))
    out.sum().backward()
    assert out.shape == (4,) and d.embed.weight.grad[:4].abs().sum() > 0 and d.embed.weight.grad[4:].abs().sum() == 0
    # the projection term: D(x, y) - D(x, y') = <E(y) - E(y'), sum_hw phi(x)>
    with torch.no_grad():
        phi = d.main[:-2](x).sum((2, 3))
        diff = d(x, torch.zeros(4, dtype=torch.int64)) - d(x, torch.ones(4, dtype=torch.int64))
    torch.testing.assert_close(diff, phi @ (d.embed.weight[0] - d.embed.weight[1]), rtol=1e-4, atol=1e-5)
    for bad in (
        torch.tensor([0, 1, 2, 10]),
        torch.tensor([-1, 0, 0, 0]),
        torch.zeros(3, dtype=torch.int64),
        torch.zeros(4),
    ):
        with pytest.raises(ValueError, match="labels"):
            g(z, bad)
        with pytest.raises(ValueError, match="labels"):
            d(x, bad)


def test_resnet_generator_skip_adds_the_input_before_tanh():
    torch.manual_seed(0)
    g = ResnetGenerator(3, 3, ngf=4, n_blocks=1, skip=True)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(g(x), torch.tanh(g.model(x) + x))
        g.model[-1].weight.zero_(), g.model[-1].bias.zero_()
        torch.testing.assert_close(g(x), torch.tanh(x))
        plain = ResnetGenerator(3, 3, ngf=4, n_blocks=1)
        torch.testing.assert_close(plain(x), torch.tanh(plain.model(x)))


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_pixel_generator_maps_each_pixel_by_its_own_channels(impl):
    """Each output pixel is one function of the same input pixel's channels: shuffling the pixels
    commutes with the generator, and a constant image stays constant (no texture, no checkerboard)."""
    torch.manual_seed(0)
    g = PixelGenerator(3, 3, width=8, depth=4, impl=impl)
    x = torch.rand(2, 3, 7, 11) * 2 - 1
    perm = torch.randperm(77)
    shuffle = lambda t: t.flatten(2)[:, :, perm].reshape(t.shape)  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(g(shuffle(x)), shuffle(g(x)))
        flat = g(torch.full((1, 3, 6, 6), 0.3))
        assert (flat - flat[..., :1, :1]).abs().max() == 0
        same = torch.cat([x[:1], torch.rand(1, 3, 7, 11)])
        same[1, :, 2, 5] = x[0, :, 2, 5]  # the same pixel in another image: the same output there
        torch.testing.assert_close(g(same)[1, :, 2, 5], g(x)[0, :, 2, 5])
        skip = PixelGenerator(3, 3, width=8, depth=2, impl=impl, skip=True)
        torch.testing.assert_close(skip(x), torch.tanh(skip.model(x) + x))
        other = PixelGenerator(3, 3, width=8, depth=4, impl="reference" if impl == "fused" else "fused")
        other.load_state_dict(g.state_dict())  # the same keys; no norm, so the same function
        torch.testing.assert_close(other(x), g(x))


def test_pixel_generator_parameter_count_and_arguments():
    """(in + 1) w + (depth - 2)(w + 1) w + (w + 1) out: 1x1 convs with biases, no norm."""
    for depth, width in ((2, 16), (3, 64), (5, 7)):
        expected = 4 * width + (depth - 2) * (width + 1) * width + (width + 1) * 3
        assert count(PixelGenerator(3, 3, width=width, depth=depth)) == expected
        assert count(PixelGenerator(3, 3, width=width, depth=depth, impl="reference")) == expected
    for bad in (1, 2.0, True):
        with pytest.raises(ValueError, match="depth"):
            PixelGenerator(depth=bad)
    with pytest.raises(ValueError, match="impl"):
        PixelGenerator(impl="fast")
