"""Adversarial training: each step trains on adversarial examples made against the current model.

``AdversarialTraining(defense, attack, eps, steps, alpha, lam, eps_warmup)`` makes the examples
(``examples(model, x, y)``) and computes the loss (``loss(net, x, x_adv, y)``); the classifier trainer
uses it (``deepfast train classifier --adversarial pgd --eps 0.2``). The losses are those of
``deepfast.losses.robust``:

    defense      loss                                                          x_adv maximises
    "at"         CE(f(x), y) + lam * CE(f(x_adv), y)                           CE(f(x_adv), y)
    "madry"      lam * CE(f(x_adv), y)            (Madry et al. 2018: lam = 1)  CE(f(x_adv), y)
    "alp"        CE(f(x), y) + lam * mean ||f(x) - f(x_adv)||^2  (logit pairing, Kannan et al. 2018)
    "alp_mixed"  (CE(f(x), y) + CE(f(x_adv), y)) / 2 + lam * mean ||f(x) - f(x_adv)||^2  (the paper's mixed minibatch)
    "trades"     CE(f(x), y) + lam * KL(p(x) || p(x_adv))   (Zhang et al. 2019)  KL(p(x) || p(x_adv))

Model mode while the examples are made: eval mode (as ``deepfast.attacks`` does, and as the PyTorch
reference implementations of TRADES and of Madry's lab, ``robustness``, do). In train mode every attack
step would update the BatchNorm running statistics with intermediate attack iterates (10 extra momentum
updates per training step, on inputs that are neither clean nor final), and batch statistics would make
each sample's perturbation depend on the rest of its batch. In eval mode the attack targets the model as
it is evaluated; the cost is that early in training the running statistics lag the batch statistics
the training forward uses.

The training forward then runs in train mode on the clean and adversarial batches concatenated
(one forward of 2N images, "madry" only the N adversarial ones): BatchNorm normalises with the
statistics of the mixed batch, as in Kannan et al.'s mixed minibatches, and its running statistics
take one update per step. Attack randomness (PGD's random start) comes from the global torch RNG, which
the trainer checkpoints, so a resumed run repeats the same attacks.

With ``eps_warmup`` = W > 0 epochs the training radius ramps up linearly (a standard remedy where
training at the full radius from the start stalls): the step that ends t epochs of training (t
fractional: epoch + (batch + 1) / batches per epoch) attacks with s * eps and step s * alpha,
s = min(1, t / W). The held-out ``val_adv_acc`` always uses the full eps.

The training attacks take every step for every sample (``early_stop=False``), as in the papers (Madry
et al.'s PGD from a random start, Goodfellow et al.'s FGSM from the image, TRADES' KL ascent, Kannan et
al.'s PGD examples): the examples of highest loss, whether or not an earlier step already fooled the
model. The held-out ``val_adv_acc`` is a robust accuracy: it uses the attack with early stop (a sample
counts as fooled once any step fooled it; see ``make_attack(evaluation=True)``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deepfast._validation import check_finite_float
from deepfast.attacks import FGSM, PGD, Attack
from deepfast.attacks.base import check_positive_int
from deepfast.losses.robust import adversarial_training_loss, logit_pairing_loss, trades_kl, trades_loss

DEFENSES = ("at", "madry", "alp", "alp_mixed", "trades")
TRAINING_ATTACKS = ("pgd", "fgsm")


class TradesPGD(PGD):
    """PGD that maximises KL(p(x) || p(x_adv)) (sum over the batch), TRADES' inner problem, in eval mode.

    Starts from a uniform random point of the eps ball (TRADES' code starts at x + 0.001 N(0, I); either
    avoids the zero gradient of the KL at x_adv = x). Every sample takes every step (no early stop, which
    would stop on misclassification, not TRADES' goal); untargeted, one restart."""

    supports_cuda_graph = False  # the objective reads the clean logits set per call

    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.3,
        alpha: float | None = None,
        steps: int = 10,
        norm: str = "inf",
        **kwargs,
    ) -> None:
        super().__init__(model, eps, alpha, steps, random_start=True, norm=norm, early_stop=False, **kwargs)
        if self.target is not None or self.restarts != 1:
            raise ValueError("TradesPGD is untargeted with one restart (target=None, restarts=1)")
        self._clean: Tensor | None = None  # the clean logits of the batch being attacked

    def _attack(self, x: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None) -> Tensor:
        with torch.no_grad():
            self._clean = self.logits(x).float()
        try:
            return super()._attack(x, goal, targeted, generator)
        finally:
            self._clean = None

    def objective(
        self, x: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        logits = self.logits(x)
        return logits, trades_kl(self._clean, logits.float()) * x.shape[0]


class AdversarialTraining:
    """The examples and the loss of one adversarial-training step.

    Args:
        defense: one of DEFENSES (see the module docstring).
        attack: "pgd" (``steps`` steps of size ``alpha`` from a random start, every sample every step)
            or "fgsm" (one step of size eps from the image; for "trades" one step of size ``alpha``
            from a random start).
        eps: Linf radius in [0, 1] pixel space, >= 0.
        steps: PGD steps (>= 1); alpha: step size, None: 2.5 * eps / steps.
        lam: weight of the adversarial term (lambda, or TRADES' beta); None: 1, or 6 for "trades".
        eps_warmup: epochs W over which the training radius ramps up linearly from 0 (0: none; >= 0).
    Errors name the classifier trainer's option (``name_prefix``: "option " for ``-o eps=...``).
    """

    def __init__(
        self,
        defense: str = "at",
        attack: str = "pgd",
        eps: float = 0.2,
        steps: int = 10,
        alpha: float | None = None,
        lam: float | None = None,
        eps_warmup: float = 0.0,
        *,
        name_prefix: str = "",
    ) -> None:
        if defense not in DEFENSES:
            raise ValueError(f"{name_prefix}defense must be one of {', '.join(DEFENSES)}, got {defense!r}")
        if attack not in TRAINING_ATTACKS:
            raise ValueError(f"{name_prefix}adversarial must be one of {', '.join(TRAINING_ATTACKS)}, got {attack!r}")
        self.defense, self.attack_name = defense, attack
        self.eps = check_finite_float(eps, f"{name_prefix}eps", minimum=0)
        self.steps = check_positive_int(steps, f"{name_prefix}adv_steps")
        self.alpha = None if alpha is None else check_finite_float(alpha, f"{name_prefix}adv_alpha", minimum=0)
        self.lam = (
            (6.0 if defense == "trades" else 1.0)
            if lam is None
            else check_finite_float(lam, f"{name_prefix}adv_lambda", minimum=0)
        )
        self.eps_warmup = check_finite_float(eps_warmup, f"{name_prefix}eps_warmup", minimum=0)

    def __repr__(self) -> str:
        return (
            f"AdversarialTraining(defense={self.defense!r}, attack={self.attack_name!r}, eps={self.eps:.4g}, "
            f"steps={self.steps}, alpha={self.alpha}, lam={self.lam:.4g}, eps_warmup={self.eps_warmup:.4g})"
        )

    def make_attack(
        self, model: nn.Module, seed: int | None = None, amp: str | None = None, evaluation: bool = False
    ) -> Attack:
        """The attack that makes the training examples for ``model`` (every sample every step); with
        ``evaluation``, the one that measures held-out robust accuracy: the same attack with early stop,
        and for "trades" PGD on the cross-entropy (TRADES' KL ascent is no misclassification test), as
        the paper reports. ``seed`` and ``amp`` as in ``Attack``."""
        if self.defense == "trades" and not evaluation:
            steps = 1 if self.attack_name == "fgsm" else self.steps
            alpha = self.alpha if self.alpha is not None or steps > 1 else self.eps
            return TradesPGD(model, self.eps, alpha, steps, seed=seed, amp=amp)
        if self.attack_name == "fgsm":
            return FGSM(model, self.eps, early_stop=evaluation, seed=seed, amp=amp)
        return PGD(
            model, self.eps, self.alpha, self.steps, random_start=True, early_stop=evaluation, seed=seed, amp=amp
        )

    def warmup_scale(self, epochs: float) -> float:
        """s = min(1, epochs / eps_warmup) (1 without warm-up): after ``epochs`` epochs of training the
        training attack's radius and step are s * eps and s * alpha."""
        return min(1.0, epochs / self.eps_warmup) if self.eps_warmup > 0 else 1.0

    def loss(self, net: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """(loss 0-dim float32, clean logits (N, K) or None for "madry", adversarial logits (N, K)) of one
        training forward of ``net`` (in train mode) on x and x_adv (N, C, H, W), labels y (N,)."""
        if self.defense == "madry":
            logits_adv = net(x_adv)
            return adversarial_training_loss(logits_adv, logits_adv, y, self.lam, clean=False), None, logits_adv
        logits, logits_adv = net(torch.cat([x, x_adv])).split(x.shape[0])
        if self.defense == "at":
            loss = adversarial_training_loss(logits, logits_adv, y, self.lam)
        elif self.defense == "trades":
            loss = trades_loss(logits, logits_adv, y, self.lam)
        else:
            loss = logit_pairing_loss(logits, logits_adv, y, self.lam, mixed=self.defense == "alp_mixed")
        return loss, logits, logits_adv
