"""One training step of the VAE, DCGAN and CycleGAN models, as a trainer runs it per batch: forward,
loss, backward, optimizer step. Used by bench_train_step.py and tests/test_train_steps.py.

    step = make_step("dcgan", "fused", batch=64, compile=True)
    losses = step()          # one step on a fixed batch: a tuple of detached 0-dim float32 losses

The batch is drawn once (offline data, deepfast.data) and reused by every call, so a step times the
model and its losses only. The noise a step draws (VAE sampling, DCGAN z, CycleGAN image pool) comes
from the global torch RNG: ``torch.manual_seed`` before a call makes it reproducible, and two steps
built with the same seed start from the same weights (``step.models`` holds every trained network;
load one step's state_dict into another to compare impls).

The steps:

- "vae": deepfast.models.VAE(1, 32) on digits in [0, 1] (N, 1, 32, 32); VAELoss (bce, beta 1); Adam 1e-3.
  Losses: (loss,).
- "dcgan": Generator / Discriminator(nz=100, ngf=ndf=64, nc=1, image_size=32) on digits in [-1, 1]
  (N, 1, 32, 32); D step on real and G(z).detach() (GANLoss.discriminator), then G step
  (non-saturating GANLoss.generator on D(G(z))); Adam 2e-4, betas (0.5, 0.999). Losses: (loss_d, loss_g).
- "cyclegan": two ResnetGenerator(ngf=64, n_blocks=6) and two PatchDiscriminator(ndf=64) on ihc
  patches in [-1, 1] (A and B: different patches, (N, 3, S, S), S = 128); the reference code's
  optimize_parameters: G step (LSGAN GANLoss of D_A(G_A(a)) and D_B(G_B(b)) + CycleConsistencyLoss,
  lambda 10, identity 0.5, the discriminators frozen), then D step (real vs an ImagePool(50) fake,
  halved). Adam 2e-4, betas (0.5, 0.999). Losses: (loss_g, loss_d_a, loss_d_b).

``compile=True`` runs every network through torch.compile (static shapes; forward and backward
compiled, losses and optimizer eager); ``channels_last=True`` puts the networks and the batch in
channels_last memory format.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from deepfast.data import digits, ihc
from deepfast.losses import CycleConsistencyLoss, GANLoss, ImagePool, VAELoss
from deepfast.models import VAE, Discriminator, Generator, PatchDiscriminator, ResnetGenerator

MODELS = ("vae", "dcgan", "cyclegan")
GAN_BETAS = (0.5, 0.999)


def _take(dataset, start: int, count: int) -> Tensor:
    """Items start .. start + count - 1 of ``dataset`` (wrapping around), stacked: (count, C, H, W)."""
    items = [dataset[(start + i) % len(dataset)] for i in range(count)]
    return torch.stack([item[0] if isinstance(item, tuple) else item for item in items])


class TrainStep:
    """Base of the steps: holds the networks (``models``, uncompiled, for state_dicts), the ones called
    (``nets``: the same, or their torch.compile wrappers) and the device/layout of the batch."""

    def __init__(self, models: dict[str, nn.Module], *, compile: bool, channels_last: bool,
                 device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.models = nn.ModuleDict(models).to(self.device, memory_format=self.memory_format)
        self.nets = {name: torch.compile(m, dynamic=False) if compile else m for name, m in self.models.items()}

    def batch(self, images: Tensor) -> Tensor:
        """``images`` on the step's device, in its memory format."""
        return images.to(self.device).contiguous(memory_format=self.memory_format)

    def __call__(self) -> tuple[Tensor, ...]:
        raise NotImplementedError


class VAEStep(TrainStep):
    """VAE on digits (N, 1, 32, 32) in [0, 1]: forward, VAELoss (bce, beta 1), backward, Adam 1e-3."""

    def __init__(self, impl: str, batch: int, *, width: int = 32, latent_dim: int = 32, **kw) -> None:
        super().__init__({"vae": VAE(1, 32, latent_dim=latent_dim, width=width, impl=impl)}, **kw)
        self.x = self.batch(_take(digits(size=32), 0, batch))
        self.criterion = VAELoss(beta=1.0, reconstruction="bce")
        self.opt = torch.optim.Adam(self.models.parameters(), lr=1e-3)

    def __call__(self) -> tuple[Tensor, ...]:
        self.opt.zero_grad(set_to_none=True)
        recon, _, _ = self.nets["vae"](self.x)
        loss = self.criterion(recon, self.x, self.models["vae"].kl)
        loss.backward()
        self.opt.step()
        return (loss.detach(),)


class DCGANStep(TrainStep):
    """DCGAN on digits (N, 1, 32, 32) in [-1, 1]: D step on real and G(z).detach(), then the
    non-saturating G step; Adam 2e-4, betas (0.5, 0.999)."""

    def __init__(self, impl: str, batch: int, *, nz: int = 100, ngf: int = 64, ndf: int = 64, **kw) -> None:
        super().__init__({"g": Generator(nz, ngf, nc=1, image_size=32, impl=impl),
                          "d": Discriminator(ndf, nc=1, image_size=32, impl=impl)}, **kw)
        self.real = self.batch(_take(digits(size=32, value_range=(-1, 1)), 0, batch))
        self.nz = nz
        self.criterion = GANLoss("non-saturating")
        self.opt_g = torch.optim.Adam(self.models["g"].parameters(), lr=2e-4, betas=GAN_BETAS)
        self.opt_d = torch.optim.Adam(self.models["d"].parameters(), lr=2e-4, betas=GAN_BETAS)

    def __call__(self) -> tuple[Tensor, ...]:
        g, d = self.nets["g"], self.nets["d"]
        z = torch.randn(self.real.shape[0], self.nz, device=self.device)
        fake = g(z)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d = self.criterion.discriminator(d(self.real), d(fake.detach()))
        loss_d.backward()
        self.opt_d.step()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g = self.criterion.generator(d(fake))
        loss_g.backward()
        self.opt_g.step()
        return loss_d.detach(), loss_g.detach()


class CycleGANStep(TrainStep):
    """CycleGAN on ihc patches (N, 3, size, size) in [-1, 1]: the reference code's G step (LSGAN +
    cycle 10 + identity 0.5, discriminators frozen) then D step (image pools of 50, D loss halved)."""

    def __init__(self, impl: str, batch: int, *, size: int = 128, ngf: int = 64, ndf: int = 64,
                 n_blocks: int = 6, **kw) -> None:
        super().__init__({"g_a": ResnetGenerator(ngf=ngf, n_blocks=n_blocks, impl=impl),
                          "g_b": ResnetGenerator(ngf=ngf, n_blocks=n_blocks, impl=impl),
                          "d_a": PatchDiscriminator(ndf=ndf, impl=impl),
                          "d_b": PatchDiscriminator(ndf=ndf, impl=impl)}, **kw)
        patches = ihc(patch_size=size, value_range=(-1, 1))
        self.real_a = self.batch(_take(patches, 0, batch))
        self.real_b = self.batch(_take(patches, batch, batch))
        self.gan = GANLoss("lsgan")
        self.cycle = CycleConsistencyLoss(lambda_a=10.0, lambda_b=10.0, lambda_identity=0.5)
        self.pool_a, self.pool_b = ImagePool(50), ImagePool(50)
        m = self.models
        self.opt_g = torch.optim.Adam(itertools.chain(m["g_a"].parameters(), m["g_b"].parameters()), lr=2e-4,
                                      betas=GAN_BETAS)
        self.opt_d = torch.optim.Adam(itertools.chain(m["d_a"].parameters(), m["d_b"].parameters()), lr=2e-4,
                                      betas=GAN_BETAS)

    def _discriminators_require_grad(self, flag: bool) -> None:
        for name in ("d_a", "d_b"):
            self.models[name].requires_grad_(flag)

    def _loss_d(self, d: nn.Module, real: Tensor, fake: Tensor, pool: ImagePool) -> Tensor:
        return 0.5 * self.gan.discriminator(d(real), d(pool.query(fake).contiguous(memory_format=self.memory_format)))

    def __call__(self) -> tuple[Tensor, ...]:
        n = self.nets
        real_a, real_b = self.real_a, self.real_b
        fake_b = n["g_a"](real_a)
        rec_a = n["g_b"](fake_b)
        fake_a = n["g_b"](real_b)
        rec_b = n["g_a"](fake_a)
        self._discriminators_require_grad(False)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g = (self.gan.generator(n["d_a"](fake_b)) + self.gan.generator(n["d_b"](fake_a))
                  + self.cycle(real_a, real_b, rec_a, rec_b, n["g_a"](real_b), n["g_b"](real_a)))
        loss_g.backward()
        self.opt_g.step()
        self._discriminators_require_grad(True)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d_a = self._loss_d(n["d_a"], real_b, fake_b, self.pool_b)
        loss_d_a.backward()
        loss_d_b = self._loss_d(n["d_b"], real_a, fake_a, self.pool_a)
        loss_d_b.backward()
        self.opt_d.step()
        return loss_g.detach(), loss_d_a.detach(), loss_d_b.detach()


STEPS: dict[str, type[TrainStep]] = {"vae": VAEStep, "dcgan": DCGANStep, "cyclegan": CycleGANStep}


def make_step(model: str, impl: str, batch: int, compile: bool = False, *, channels_last: bool = False,
              device: torch.device | str = "cpu", seed: int = 0, **sizes) -> TrainStep:
    """The training step of ``model`` ("vae", "dcgan", "cyclegan") with impl "fused" or "reference",
    on a fixed batch of ``batch`` images, weights drawn under ``torch.manual_seed(seed)``. ``sizes``
    override the network sizes (vae: width, latent_dim; dcgan: nz, ngf, ndf; cyclegan: size, ngf, ndf,
    n_blocks), for small tests."""
    if model not in STEPS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    torch.manual_seed(seed)
    return STEPS[model](impl, batch, compile=compile, channels_last=channels_last, device=device, **sizes)
