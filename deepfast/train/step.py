"""One training step of the VAE, DCGAN and CycleGAN trainers of deepfast.train (the library's own
``train_step``: forward, losses, backward, optimizer steps) on a fixed batch: what the speed section
of the demo (deepfast/demo/speed.py), benchmarks/bench_train_step.py, compare_train_step.py and
profile_train_step.py time, and tests/test_train_step.py checks.

    step = make_step("dcgan", "fused", batch=64, compile=True)
    losses = step()          # one step on the fixed batch: a tuple of detached 0-dim float32 losses

The batch is drawn once (offline data, deepfast.data) and reused by every call, so a step times the
model and its losses only. The noise a step draws (VAE sampling, DCGAN z, CycleGAN image pool) comes
from the global torch RNG: ``torch.manual_seed`` before a call makes it reproducible, and two steps
built with the same seed start from the same weights (``step.models`` holds every trained network).

The steps (trainer options as below, the rest the trainers' defaults):

- "vae": VAETrainer, VAE(1, 32, latent_dim 32, width 32) on digits in [0, 1] (N, 1, 32, 32); VAELoss
  (bce, beta 1); Adam 1e-3. Losses: (loss, recon, kl).
- "dcgan": DCGANTrainer, Generator / Discriminator(nz=100, ngf=ndf=64, nc=1, 32x32) on digits in
  [-1, 1]; D step on real and G(z).detach(), then the non-saturating G step with D frozen; Adam 2e-4,
  betas (0.5, 0.999). Losses: (d_loss, g_loss, d_real, d_fake).
- "cyclegan": CycleGANTrainer, two ResnetGenerator(ngf=64, n_blocks=6) and two PatchDiscriminator(ndf=64)
  on ihc patches in [-1, 1] (A and B: different patches, (N, 3, S, S), S = 128); the reference code's
  G step (LSGAN + cycle 10 + identity 0.5, discriminators frozen) then D step (image pools of 50, D
  losses halved); Adam 2e-4, betas (0.5, 0.999). Losses: (g_gan, cycle, idt, d_a, d_b).

``compile=True`` runs every network through torch.compile (the trainer's --compile);
``channels_last=True`` puts the networks and the batch in channels_last memory format.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfast.data import digits, ihc
from deepfast.train.config import TrainConfig
from deepfast.train.data import to_device
from deepfast.train.registry import make_trainer

MODELS = ("vae", "dcgan", "cyclegan")
# The networks' sizes (trainer options) and the image size of each step; ``make_step`` overrides them.
SIZES = {
    "vae": {"latent_dim": 32, "width": 32, "size": 32},
    "dcgan": {"nz": 100, "ngf": 64, "ndf": 64, "size": 32},
    "cyclegan": {"ngf": 64, "ndf": 64, "n_blocks": 6, "size": 128},
}


def _take(dataset, start: int, count: int) -> Tensor:
    """Items start .. start + count - 1 of ``dataset`` (wrapping around), stacked: (count, C, H, W)."""
    items = [dataset[(start + i) % len(dataset)] for i in range(count)]
    return torch.stack([item[0] if isinstance(item, tuple) else item for item in items])


class TrainStep:
    """A trainer's ``train_step`` on a fixed batch; ``models`` holds its networks (uncompiled)."""

    def __init__(
        self,
        model: str,
        impl: str,
        batch: int,
        *,
        compile: bool,
        channels_last: bool,
        device: torch.device | str,
        seed: int,
        size: int,
        **options,
    ) -> None:
        config = TrainConfig(
            model=model,
            impl=impl,
            batch_size=batch,
            compile=compile,
            channels_last=channels_last,
            device=str(device),
            seed=seed,
            image_size=size,
            progress=False,
            options=options,
        )
        self.trainer = make_trainer(config)
        self.trainer.device = torch.device(device)
        if model == "cyclegan":
            patches = ihc(patch_size=size, value_range=(-1, 1))
            images: object = (_take(patches, 0, batch), _take(patches, batch, batch))
        else:
            images = _take(digits(size=size, value_range=self.trainer.value_range), 0, batch)
        self.trainer.setup(3 if model == "cyclegan" else 1)
        self.models = nn.ModuleDict(self.trainer.models)
        self.batch = to_device(images, self.trainer.device, channels_last)

    def __call__(self) -> tuple[Tensor, ...]:
        losses = self.trainer.train_step(self.batch)
        self.trainer.scaler.update()
        return tuple(v.detach().float() for v in losses.values())


def make_step(
    model: str,
    impl: str,
    batch: int,
    compile: bool = False,
    *,
    channels_last: bool = False,
    device: torch.device | str = "cpu",
    seed: int = 0,
    **sizes,
) -> TrainStep:
    """The training step of ``model`` ("vae", "dcgan", "cyclegan") with impl "fused" or "reference",
    on a fixed batch of ``batch`` images, weights drawn under ``torch.manual_seed(seed)``. ``sizes``
    override SIZES (vae: width, latent_dim; dcgan: nz, ngf, ndf; cyclegan: size, ngf, ndf, n_blocks),
    for small tests."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    return TrainStep(
        model,
        impl,
        batch,
        compile=compile,
        channels_last=channels_last,
        device=device,
        seed=seed,
        **{**SIZES[model], **sizes},
    )
