"""CycleGAN trainer (Zhu et al. 2017) as in its reference code: LSGAN, cycle weight 10, identity 0.5,
image pools of 50, Adam 2e-4 betas (0.5, 0.999), constant learning rate then linear decay to zero."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from deepfast._validation import check_choice
from deepfast.losses import CycleConsistencyLoss, GANLoss, ImagePool, SaliencyLoss
from deepfast.models import PatchDiscriminator, PixelGenerator, ResnetGenerator
from deepfast.train.dcgan import GAN_BETAS
from deepfast.train.trainer import Trainer


def linear_decay(epochs: int, decay_epochs: int):
    """LR factor at epoch e (0-based): 1 for the first epochs - decay_epochs epochs, then falling
    linearly (the reference code's rule 1 - max(0, e + 1 - n_constant) / (decay_epochs + 1))."""
    constant = epochs - decay_epochs
    return lambda e: 1.0 - max(0, e + 1 - constant) / (decay_epochs + 1)


@dataclass
class CycleGANOptions:
    """Options of the cyclegan trainer (see CycleGANTrainer)."""

    ngf: int = 32
    ndf: int = 64
    n_blocks: int = 6
    lambda_a: float = 10.0
    lambda_b: float = 10.0
    lambda_identity: float = 0.5
    pool_size: int = 50
    loss: str = "lsgan"
    decay_epochs: int | None = None
    saliency: float = 0.0
    saliency_k: float = 100.0
    saliency_tau: float = 0.5
    saliency_tau_b: float | None = None
    generator: str = "resnet"
    upsample: str = "transposed"
    skip: bool = False
    semantic: float = 0.0
    semantic_classifier: str | None = None


class CycleGANTrainer(Trainer):
    """G_A: A -> B, G_B: B -> A, D_A judges domain B, D_B domain A. Per batch of pairs (a, b): the
    generator step (LSGAN on D_A(G_A(a)) and D_B(G_B(b)) with the D frozen, + CycleConsistencyLoss),
    then the discriminator step on real images and pooled fakes, each D loss halved. Losses "g_gan",
    "cycle", "idt", "d_a", "d_b". Samples: rows a, G_A(a), G_B(G_A(a)), b, G_B(b), G_A(G_B(b)) of fixed
    held-out (else training) pairs. decay_epochs defaults to half the epochs.

    saliency > 0 adds the content-preserving saliency constraint (Li et al. 2021, deepfast.losses.SaliencyLoss,
    slope saliency_k) on (a, G_A(a)) and (b, G_B(b)) to the generator loss, its weight falling linearly from
    ``saliency`` to 0 over the run (loss "saliency"). ``saliency_tau`` is the mask threshold of domain A
    (the masks of a and of G_B(b)) and ``saliency_tau_b`` that of domain B (of b and G_A(a); None: the same).

    semantic > 0 adds CyCADA's semantic consistency (Hoffman et al. 2018) on the A -> B direction:
    semantic * CE(f(G_A(a)), argmax f(a)), f the frozen classifier of checkpoint ``semantic_classifier``
    (a classifier run on domain A, images in [0, 1]), so that translations keep what f sees in a, e.g. a
    digit's class (loss "semantic"). The B -> A term of CyCADA is left out: it needs f's labels of B
    images, which are what is unreliable in domain adaptation.

    ``generator``: "resnet" (deepfast.models.ResnetGenerator: ngf, n_blocks, upsample, skip) or "pixel"
    (deepfast.models.PixelGenerator, ngf wide: 1x1 convs, each output pixel a function of its own input
    pixel; for re-staining, where the translation changes colours and keeps every structure).
    ``upsample``: the generators' upsampling, "transposed" (the reference code's) or "resize"
    (resize-convolution, no checkerboard artifacts; see deepfast.models.ResnetGenerator)."""

    name = "cyclegan"
    value_range = (-1.0, 1.0)
    defaults = {"data": "stain", "epochs": 10, "batch_size": 1, "lr": 2e-4, "image_size": 64}
    Options = CycleGANOptions

    def build(self, channels: int) -> None:
        o, impl = self.options, self.config.impl
        self.g_a, self.g_b = (self.add_model(k, self.generator(channels)) for k in ("g_a", "g_b"))
        self.d_a = self.add_model("d_a", PatchDiscriminator(channels, o.ndf, impl=impl))
        self.d_b = self.add_model("d_b", PatchDiscriminator(channels, o.ndf, impl=impl))
        self.optimizers["g"] = self.adam(self.g_a, self.g_b, betas=GAN_BETAS)
        self.optimizers["d"] = self.adam(self.d_a, self.d_b, betas=GAN_BETAS)
        epochs = self.config.epochs
        decay = o.decay_epochs if o.decay_epochs is not None else epochs // 2
        if not 0 <= decay <= epochs:
            raise ValueError(f"decay_epochs must be in 0..epochs ({epochs}), got {decay}")
        for key, opt in self.optimizers.items():
            self.schedulers[key] = torch.optim.lr_scheduler.LambdaLR(opt, linear_decay(epochs, decay))
        self.gan = GANLoss(o.loss)
        self.cycle = CycleConsistencyLoss(o.lambda_a, o.lambda_b, o.lambda_identity)
        self.pool_a, self.pool_b = ImagePool(o.pool_size), ImagePool(o.pool_size)
        self.saliency = None
        if o.saliency > 0:
            tau_a = o.saliency_tau
            tau_b = tau_a if o.saliency_tau_b is None else o.saliency_tau_b
            # (A -> B on (a, G_A(a)), B -> A on (b, G_B(b)))
            self.saliency = [
                SaliencyLoss(o.saliency_k, taus, o.saliency, epochs, self.value_range)
                for taus in ((tau_a, tau_b), (tau_b, tau_a))
            ]
        self.semantic = None
        if o.semantic > 0:
            if not o.semantic_classifier:
                raise ValueError(
                    "option semantic needs option semantic_classifier: the checkpoint of a classifier "
                    "trained on domain A"
                )
            from deepfast.train.registry import load_trainer

            self.semantic = load_trainer(o.semantic_classifier, device=str(self.device)).model.requires_grad_(False)

    def generator(self, channels: int) -> ResnetGenerator | PixelGenerator:
        """A generator of option ``generator``: "resnet" (ngf, n_blocks, upsample, skip) or "pixel" (ngf wide)."""
        o, impl = self.options, self.config.impl
        check_choice(o.generator, "option generator", ("resnet", "pixel"))
        if o.generator == "pixel":
            return PixelGenerator(channels, channels, o.ngf, impl=impl, skip=o.skip)
        return ResnetGenerator(channels, channels, o.ngf, o.n_blocks, impl=impl, upsample=o.upsample, skip=o.skip)

    def train_step(self, batch: object) -> dict[str, Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError(
                f"cyclegan needs data of pairs (a, b), such as unpaired:PATH; {self.config.data!r} gives single images"
            )
        real_a, real_b = batch
        g_a, g_b = self.nets["g_a"], self.nets["g_b"]
        identity = self.options.lambda_identity > 0
        with self.frozen(self.d_a, self.d_b), self.autocast():
            fake_b, fake_a = g_a(real_a), g_b(real_b)
            rec_a, rec_b = g_b(fake_b), g_a(fake_a)
            idt_a, idt_b = (g_a(real_b), g_b(real_a)) if identity else (None, None)
            judge_a, judge_b = self.frozen_net("d_a"), self.frozen_net("d_b")
            g_gan = self.gan.generator(judge_a(fake_b)) + self.gan.generator(judge_b(fake_a))
            cycle = self.cycle(real_a, real_b, rec_a, rec_b, idt_a, idt_b)
            g_loss = g_gan + cycle
            if self.saliency is not None:
                for loss in self.saliency:
                    loss.set_epoch(self.epoch)
                saliency = self.saliency[0](real_a, fake_b) + self.saliency[1](real_b, fake_a)
                g_loss = g_loss + saliency
            if self.semantic is not None:
                semantic = self.semantic_loss(real_a, fake_b)
                g_loss = g_loss + semantic
        self.backward(g_loss, self.optimizers["g"])
        with self.autocast():
            d_a = 0.5 * self.gan.discriminator(self.nets["d_a"](real_b), self.nets["d_a"](self.pool_b.query(fake_b)))
            d_b = 0.5 * self.gan.discriminator(self.nets["d_b"](real_a), self.nets["d_b"](self.pool_a.query(fake_a)))
        self.backward(d_a + d_b, self.optimizers["d"])
        terms = self.cycle.terms
        losses = {
            "g_gan": g_gan,
            "cycle": terms["cycle_a"] + terms["cycle_b"],
            "idt": terms["idt_a"] + terms["idt_b"] if identity else torch.zeros((), device=self.device),
            "d_a": d_a,
            "d_b": d_b,
        }
        if self.saliency is not None:
            losses["saliency"] = saliency
        if self.semantic is not None:
            losses["semantic"] = semantic
        return losses

    def semantic_loss(self, real_a: Tensor, fake_b: Tensor) -> Tensor:
        """semantic * CE(f(G_A(a)), argmax f(a)), f the frozen classifier (eval mode) on [0, 1] images."""
        lo, hi = self.value_range
        to01 = lambda t: (t - lo) / (hi - lo)  # noqa: E731
        with torch.no_grad():
            labels = self.semantic(to01(real_a)).argmax(1)
        return self.options.semantic * F.cross_entropy(self.semantic(to01(fake_b)).float(), labels)

    def rank_state(self) -> dict:
        return {"pool_a": self.pool_a.state_dict(), "pool_b": self.pool_b.state_dict()}

    def load_rank_state(self, state: dict) -> None:
        self.pool_a.load_state_dict(state["pool_a"])
        self.pool_b.load_state_dict(state["pool_b"])

    def samples(self) -> list[Tensor]:
        data = self.held_out if self.held_out is not None else self.train_data
        pairs = [data[i] for i in range(min(self.num_samples(8), len(data)))]
        a = torch.stack([p[0] for p in pairs]).to(self.device)
        b = torch.stack([p[1] for p in pairs]).to(self.device)
        with self.evaluating(self.g_a, self.g_b):
            fake_b, fake_a = self.g_a(a), self.g_b(b)
            return [a, fake_b, self.g_b(fake_b), b, fake_a, self.g_a(fake_a)]
