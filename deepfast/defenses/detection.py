"""Detection of adversarial inputs from a classifier's activations (SafetyNet-style, Lu et al. 2017).

A forward hook records the output of one named layer of the classifier (e.g. LeNet's penultimate ReLU,
"classifier.3", 84 values per image); a small detector on those activations, standardised, says
whether the input is adversarial (logit > 0). SafetyNet's detector is an RBF-SVM on quantised ReLU
codes, which has no gradient; here it is a one-hidden-layer MLP in torch (``hidden=0``: logistic
regression), nonlinear like the RBF-SVM and differentiable, so that an adaptive attack can target the
classifier and the detector together (``AdaptivePGD``): a detector that only holds against attacks
that ignore it is not evidence of robustness (Carlini and Wagner 2017).

``fit_detector`` trains it on clean and adversarial images; ``detection_auc`` is the ROC-AUC of its
logits (sklearn.metrics.roc_auc_score), adversarial the positive class; ``detection_report`` does both
for FGSM, PGD and the adaptive attack.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deepfast._validation import check_finite_float
from deepfast.attacks import FGSM, PGD, Attack, eval_mode
from deepfast.attacks.base import check_positive_int, model_device


def find_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule of ``model`` named ``layer`` (a name of ``model.named_modules()``); ValueError naming it."""
    modules = dict(model.named_modules())
    if not isinstance(layer, str) or not layer or layer not in modules:
        names = ", ".join(n for n in modules if n)
        raise ValueError(f"layer {layer!r} is not a layer of the classifier; its layers: {names}")
    return modules[layer]


@contextlib.contextmanager
def recording(module: nn.Module) -> Iterator[list[Tensor]]:
    """Inside, every forward of ``module`` appends its output to the yielded list (a forward hook,
    removed on exit)."""
    outputs: list[Tensor] = []
    handle = module.register_forward_hook(lambda m, args, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


class ActivationDetector(nn.Module):
    """x (N, C, H, W) in [0, 1] -> detector logits (N,) (> 0: adversarial), from the activations (N, D)
    (flattened) of ``classifier``'s layer ``layer``: head((a - mean) / std).

    The classifier is not a submodule: the detector's parameters and state_dict are the head's and the
    standardisation's only. Call it with the classifier in eval mode (``fit_detector`` and the attacks do).
    """

    def __init__(self, classifier: nn.Module, layer: str, mean: Tensor, std: Tensor, hidden: int = 64) -> None:
        super().__init__()
        # not registered as submodules: their weights are not the detector's
        self.__dict__["classifier"] = classifier
        self.__dict__["module"] = find_layer(classifier, layer)
        self.layer = layer
        if mean.dim() != 1 or std.shape != mean.shape:
            raise ValueError(
                f"mean and std must be (D,) tensors of one shape, got {tuple(mean.shape)}, {tuple(std.shape)}"
            )
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("std", std.detach().float().clamp_min(1e-6))
        d = mean.numel()
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
            raise ValueError(f"hidden must be an int >= 0 (0: logistic regression), got {hidden!r}")
        self.head = (
            nn.Linear(d, 1) if hidden == 0 else nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        )

    def recording(self) -> contextlib.AbstractContextManager[list[Tensor]]:
        """``recording(layer)`` of the detector's layer."""
        return recording(self.module)

    def activations(self, x: Tensor) -> Tensor:
        """The layer's activations (N, D) for images x (N, ...), flattened, float32."""
        with self.recording() as outputs:
            self.classifier(x)
        return outputs[-1].flatten(1).float()

    def score(self, activations: Tensor) -> Tensor:
        """Detector logits (N,) for activations (N, ...) of the layer."""
        return self.head((activations.flatten(1).float() - self.mean) / self.std).squeeze(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.score(self.activations(x))


def _activations(classifier: nn.Module, layer: str, images: Tensor, batch_size: int = 512) -> Tensor:
    """The activations (N, D) of ``layer`` for images (N, ...), float32 on the classifier's device, no grad."""
    device = model_device(classifier)
    with recording(find_layer(classifier, layer)) as outputs, eval_mode(classifier), torch.no_grad():
        for chunk in images.split(batch_size):
            classifier(chunk.to(device))
    return torch.cat([o.flatten(1).float() for o in outputs])


def fit_detector(
    classifier: nn.Module,
    layer: str,
    clean: Tensor,
    adversarial: Tensor,
    *,
    hidden: int = 64,
    epochs: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> ActivationDetector:
    """An ``ActivationDetector`` trained to tell ``adversarial`` (N_a, C, H, W) from ``clean`` (N_c, C, H, W)
    images (in [0, 1]): full-batch Adam on the binary cross-entropy of the logits, the classes weighted
    equally (positive weight N_c / N_a), standardisation from the training activations. The head's
    initial weights come from a generator seeded with ``seed`` (the global RNG is not touched)."""
    for t, name in ((clean, "clean"), (adversarial, "adversarial")):
        if not isinstance(t, Tensor) or t.dim() < 2 or t.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty (N, C, H, W) tensor of images")
    check_positive_int(epochs, "epochs")
    a_clean, a_adv = _activations(classifier, layer, clean), _activations(classifier, layer, adversarial)
    feats = torch.cat([a_clean, a_adv])
    target = torch.cat([torch.zeros(len(a_clean)), torch.ones(len(a_adv))]).to(feats.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        detector = ActivationDetector(classifier, layer, feats.mean(0), feats.std(0), hidden).to(feats.device)
    optimizer = torch.optim.Adam(detector.head.parameters(), lr=lr, weight_decay=weight_decay)
    pos_weight = torch.tensor(len(a_clean) / len(a_adv), device=feats.device)
    for _ in range(epochs):
        loss = F.binary_cross_entropy_with_logits(detector.score(feats), target, pos_weight=pos_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return detector.eval()


def detection_auc(detector: ActivationDetector, clean: Tensor, adversarial: Tensor) -> float:
    """ROC-AUC of the detector's logits on ``clean`` (negatives) and ``adversarial`` (positives) images
    (N, C, H, W) in [0, 1]; 0.5 is chance, 1 perfect."""
    if clean.shape[0] == 0 or adversarial.shape[0] == 0:
        raise ValueError("detection_auc needs at least one clean and one adversarial image")
    with torch.no_grad():
        scores = [
            detector.score(_activations(detector.classifier, detector.layer, t)).cpu() for t in (clean, adversarial)
        ]
    labels = [0] * len(scores[0]) + [1] * len(scores[1])
    from sklearn.metrics import roc_auc_score  # (scikit-learn: imported when a score is computed)

    return float(roc_auc_score(labels, torch.cat(scores).numpy()))


ADAPTIVE_LOSSES = ("softplus", "logit")


class AdaptivePGD(PGD):
    """PGD against a classifier and its detector together: it increases
    sum_i CE(f(x_i), y_i) - c * h(d(x_i)), with d the detector logit (> 0: flagged), so that the examples
    fool the classifier and look clean to the detector.

    h = softplus (default; c * softplus(d) is c times the detector's cross-entropy towards "clean"): it
    stops paying once d is well below 0. h = identity ("logit", the plain form) rewards pushing d ever
    lower, without bound, and on LeNet/digits the attack then spends its budget on the detector and
    fools the classifier less. Every sample takes every step (early stop would stop as soon as the
    classifier is fooled, detected or not). Args as PGD's, plus ``detector``, ``c`` >= 0 and ``detector_loss``."""

    supports_cuda_graph = False  # the objective records a layer's output with hooks set per forward

    def __init__(
        self,
        model: nn.Module,
        detector: ActivationDetector,
        eps: float = 0.3,
        alpha: float | None = None,
        steps: int = 40,
        c: float = 1.0,
        norm: str = "inf",
        *,
        detector_loss: str = "softplus",
        **kwargs,
    ) -> None:
        super().__init__(model, eps, alpha, steps, random_start=True, norm=norm, early_stop=False, **kwargs)
        if detector.classifier is not model:
            raise ValueError("detector must be an ActivationDetector on this model (detector.classifier is not model)")
        if detector_loss not in ADAPTIVE_LOSSES:
            raise ValueError(f"detector_loss must be one of {', '.join(ADAPTIVE_LOSSES)}, got {detector_loss!r}")
        self.detector = detector
        self.c = check_finite_float(c, "c", minimum=0)
        self.detector_loss = detector_loss

    def objective(
        self, x: Tensor, goal: Tensor, targeted: bool, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        with self.detector.recording() as outputs:
            logits = self.logits(x)
        d = self.detector.score(outputs[-1])
        d = F.softplus(d) if self.detector_loss == "softplus" else d
        return logits, self.loss(logits, goal, targeted) - self.c * d.sum()


@dataclass
class DetectionRow:
    """One attack against the detector: its name, the share of the held-out images it moved to a wrong
    class (fooled), the detector's ROC-AUC on clean held-out images against those fooling examples, the
    share of them flagged at logit > 0, and the share of all images fooled and not flagged (evaded)."""

    attack: str
    fooled: float
    auc: float
    flagged: float
    evaded: float


@dataclass
class DetectionReport:
    layer: str
    eps: float
    n_train: int
    n_test: int
    rows: list[DetectionRow]

    def table(self) -> str:
        lines = [
            f"detector on {self.layer!r}, trained on {self.n_train} clean + FGSM + PGD images; "
            f"{self.n_test} held-out images, eps {self.eps:.4g}",
            f"{'attack':<34} {'fooled':>7} {'ROC-AUC':>8} {'flagged':>8} {'evaded':>7}",
        ]
        lines += [
            f"{r.attack:<34} {100 * r.fooled:6.1f}% {r.auc:8.3f} {100 * r.flagged:7.1f}% {100 * r.evaded:6.1f}%"
            for r in self.rows
        ]
        return "\n".join(lines)


def _fooling(
    classifier: nn.Module, attack: Attack, images: Tensor, labels: Tensor, batch_size: int
) -> tuple[Tensor, float]:
    """(the adversarial examples that fool the classifier, the share of images they are)."""
    advs = torch.cat([attack(x, y) for x, y in zip(images.split(batch_size), labels.split(batch_size))])
    device = model_device(classifier)
    with eval_mode(classifier), torch.no_grad():
        pred = torch.cat([classifier(a.to(device)).argmax(1).cpu() for a in advs.split(batch_size)])
    fooled = pred != labels
    return advs[fooled], float(fooled.float().mean())


def detection_report(
    classifier: nn.Module,
    layer: str,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    eps: float,
    *,
    steps: int = 40,
    c: Sequence[float] = (1.0, 10.0),
    detector_losses: Sequence[str] = ADAPTIVE_LOSSES,
    hidden: int = 64,
    batch_size: int = 256,
    seed: int = 0,
) -> DetectionReport:
    """Trains a detector on ``layer`` with the clean ``train`` images and their FGSM and PGD-``steps``
    examples at ``eps`` (Linf), then measures it on the ``test`` images against FGSM, PGD and
    ``AdaptivePGD`` (one row per value of ``c`` and per ``detector_losses``). train, test: (images
    (N, C, H, W) in [0, 1], labels (N,)).
    Attacks are seeded with ``seed``."""
    eps = check_finite_float(eps, "eps", minimum=0)
    attacks: list[tuple[str, Attack]] = [
        ("FGSM", FGSM(classifier, eps, early_stop=False, seed=seed)),
        (f"PGD-{steps}", PGD(classifier, eps, steps=steps, early_stop=False, seed=seed)),
    ]
    x_train, y_train = train
    adv_train = [
        torch.cat([atk(x, y) for x, y in zip(x_train.split(batch_size), y_train.split(batch_size))])
        for _, atk in attacks
    ]
    detector = fit_detector(classifier, layer, x_train, torch.cat(adv_train), hidden=hidden, seed=seed)
    attacks += [
        (
            f"adaptive PGD-{steps} {h} c={ci:g}",
            AdaptivePGD(classifier, detector, eps, steps=steps, c=ci, detector_loss=h, seed=seed),
        )
        for h in detector_losses
        for ci in c
    ]
    x_test, y_test = test
    rows = []
    for name, atk in attacks:
        adv, fooled = _fooling(classifier, atk, x_test, y_test, batch_size)
        if adv.shape[0] == 0:
            rows.append(DetectionRow(name, fooled, float("nan"), float("nan"), 0.0))
            continue
        auc = detection_auc(detector, x_test, adv)
        with torch.no_grad():
            flagged = float((detector.score(_activations(classifier, layer, adv)) > 0).float().mean())
        rows.append(DetectionRow(name, fooled, auc, flagged, fooled * (1 - flagged)))
    return DetectionReport(layer, eps, len(x_train), len(x_test), rows)
