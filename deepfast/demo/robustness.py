"""Demo section: PGD against the digits classifier, adversarial training and logit pairing, a picture
of adversarial examples, and a detector of adversarial inputs."""

from __future__ import annotations

import functools

import torch

from deepfast.attacks import APGDDLR, EOTPGD, PGD, RandomTransform, evaluate
from deepfast.data import digits
from deepfast.defenses.detection import detection_report
from deepfast.demo.context import Demo, stack
from deepfast.demo.report import Section
from deepfast.metrics import predict_proba

EPS = (0.05, 0.1, 0.2)
# the physical-world check: eps, the rescalings and rotations the examples are shown at, and EOT's distribution
PHYSICAL_EPS = 0.1
SCALES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4)
ROTATIONS = (0, 5, 10, 15, 20, 25, 30, 35, 40)
EOT_TRANSFORM = dict(scale=(0.6, 1.4), rotation=40.0)


def physical_world(demo: Demo, section: Section, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """Attack success of PGD and EOT-PGD examples (and the error of the clean digits) as they are rescaled and
    rotated before the judge sees them: Lu et al. 2017 against Athalye et al. 2018, as a plot."""
    from deepfast.plots import line_panels

    alpha = 2.5 * PHYSICAL_EPS / steps
    examples = {
        "clean digits (no attack)": x,
        f"PGD-{steps}": PGD(demo.judge, eps=PHYSICAL_EPS, alpha=alpha, steps=steps, early_stop=False, seed=0)(x, y),
        f"EOT-PGD-{steps} (8 transformations a step)": EOTPGD(
            demo.judge,
            eps=PHYSICAL_EPS,
            alpha=alpha,
            steps=steps,
            eot_samples=8,
            early_stop=False,
            transform=RandomTransform(**EOT_TRANSFORM),
            seed=0,
        )(x, y),
    }

    def error(images: torch.Tensor, transform: RandomTransform) -> float:
        seen = transform(images, torch.Generator().manual_seed(0))
        return (predict_proba(demo.judge, seen).argmax(1) != y).double().mean().item()

    curves = {
        "scale": {n: [error(v, RandomTransform(scale=(s, s))) for s in SCALES] for n, v in examples.items()},
        "rotation": {n: [error(v, RandomTransform(rotation=float(r))) for r in ROTATIONS] for n, v in examples.items()},
    }
    panels = [
        {
            "x": list(SCALES),
            "curves": curves["scale"],
            "xlabel": "rescaling factor (viewing distance)",
            "ylabel": "misclassified (attack success)",
            "ylim": (0, 1.02),
        },
        {
            "x": list(ROTATIONS),
            "curves": curves["rotation"],
            "ylim": (0, 1.02),
            "xlabel": "rotation up to +-r degrees, uniform (viewing angle)",
            "ylabel": "misclassified (attack success)",
        },
    ]
    line_panels(
        panels,
        demo.out / "images" / "physical_world.png",
        title=f"Linf eps {PHYSICAL_EPS} examples against the judge, rescaled and rotated",
    )
    clean, pgd, eot = (curves["scale"][k] for k in examples)
    near = [SCALES.index(0.9), SCALES.index(1.1)]
    rot_clean, rot_pgd, rot_eot = (curves["rotation"][k][ROTATIONS.index(20)] for k in examples)
    section.text(
        f"The physical-world point (Lu et al. 2017 against Athalye et al. 2018): {len(y)} held-out digits "
        f"attacked at eps {PHYSICAL_EPS} by PGD-{steps} and by EOT-PGD-{steps} (gradients averaged over 8 "
        f"random rescalings in {EOT_TRANSFORM['scale']} and rotations up to {EOT_TRANSFORM['rotation']:g} "
        "degrees; both take every step, no early stop), then shown to the judge rescaled (bilinear, about the "
        f"centre) and rotated. PGD's examples fool it {pgd[SCALES.index(1.0)]:.0%} of the time as made, but "
        f"only {pgd[near[0]]:.0%} / {pgd[near[1]]:.0%} once rescaled by 0.9 / 1.1, and {rot_pgd:.0%} rotated up "
        f"to 20 degrees (the clean digits: {clean[near[0]]:.0%} / {clean[near[1]]:.0%}, {rot_clean:.0%}): they "
        f"are fragile, as Lu et al. found. The EOT examples fool it {eot[SCALES.index(1.0)]:.0%} as made and "
        f"{eot[near[0]]:.0%} / {eot[near[1]]:.0%}, {rot_eot:.0%} under the same changes: their success hardly "
        "depends on the viewpoint and passes PGD's under the larger rescalings and rotations, but at this eps "
        "and over so wide a distribution of transformations it stays well below PGD's as made. Where the "
        "clean curve rises (strong shrinking), the transformation alone fools the judge."
    )
    section.image(
        "images/physical_world.png",
        "attack success (share of the digits misclassified) against the "
        "rescaling factor and the rotation range, clean digits, PGD and EOT-PGD examples",
    )
    demo.results["physical_world"] = {
        "eps": PHYSICAL_EPS,
        "scales": list(SCALES),
        "rotations": list(ROTATIONS),
        "misclassified": curves,
    }


def robustness_section(demo: Demo, section: Section) -> None:
    x, y = stack(digits("val"))
    steps = 2 if demo.smoke else 40
    pgd = functools.partial(PGD, steps=steps, alpha=2.5 * max(EPS) / steps)
    apgd = functools.partial(APGDDLR, steps=steps)
    models = {"standard training": demo.judge}
    epochs = demo.epochs(12, 60)
    for name, defense in (("adversarial training (PGD-10, eps 0.2)", "at"), ("adversarial logit pairing", "alp")):
        trainer = demo.train(
            f"classifier_{defense}",
            model="classifier",
            epochs=epochs,
            lr=3e-3,
            options={"adversarial": "pgd", "defense": defense, "eps": max(EPS)},
        )
        models[name] = trainer.model
    rows = []
    for name, model in models.items():
        result = evaluate(model, (x, y), attacks=[pgd, apgd], eps=EPS, progress=demo.progress)
        row = {"classifier": name, "clean": result.clean_accuracy}
        for i, e in enumerate(EPS):
            row[f"PGD-{steps} eps {e}"] = result.accuracy_after["PGD"][i]
            row[f"+ APGD-DLR eps {e}"] = result.robust_accuracy[i]
        rows.append(row)
    section.text(
        f"Accuracy on the {len(y)} held-out digits, clean, under Linf PGD-{steps} (random start, "
        f"alpha = 2.5 eps / steps) and under the worst of PGD-{steps} and APGD with the DLR loss "
        f"({steps} steps, run on the digits PGD left; deepfast.attacks.evaluate) at each eps, pixels "
        "in [0, 1]. The "
        f"defended LeNets trained {epochs} epochs on CE(x) + CE(x_adv) (Madry-style adversarial "
        "training) and on CE(x) + ||f(x) - f(x_adv)||^2 (logit pairing), x_adv from PGD-10 at eps 0.2."
    )
    section.table(rows, "accuracy (fractions of the held-out digits)")
    demo.results["robustness"] = rows
    # a picture: originals, PGD examples against the standard classifier, amplified perturbations
    shown = x[:10]
    adv = PGD(demo.judge, eps=max(EPS), alpha=2.5 * max(EPS) / steps, steps=steps)(shown, y[:10])
    delta = adv - shown
    amplified = 0.5 + delta / (2 * delta.abs().max().clamp_min(1e-12))
    before = predict_proba(demo.judge, shown).argmax(1).tolist()
    after = predict_proba(demo.judge, adv).argmax(1).tolist()
    section.image(
        demo.save("adversarial", torch.cat([shown, adv, amplified]), nrow=10, scale=2),
        f"rows: held-out digits (predicted {before}), PGD-{steps} at eps {max(EPS)} against the standard "
        f"classifier (predicted {after}), the perturbation amplified (gray = 0)",
    )
    physical_world(demo, section, x[:200], y[:200], steps)
    # detection
    train_x, train_y = stack(digits("train"), 1438 if not demo.smoke else 64)
    report = detection_report(demo.judge, "classifier.3", (train_x, train_y), (x, y), eps=0.1, steps=steps)
    section.text(
        "A SafetyNet-style detector (deepfast.defenses.detection: an MLP on the classifier's penultimate "
        "ReLU activations) trained on clean training digits against their FGSM and PGD examples at eps "
        "0.1, then tested on held-out digits, including an adaptive attack that also fights the detector."
    )
    section.table([{k: v for k, v in vars(r).items()} for r in report.rows], "detection on held-out digits")
