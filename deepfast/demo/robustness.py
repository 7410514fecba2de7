"""Demo section: PGD against the digits classifier, adversarial training and logit pairing, a picture
of adversarial examples, and a detector of adversarial inputs."""

from __future__ import annotations

import functools

import torch

from deepfast.attacks import APGDDLR, PGD, evaluate
from deepfast.data import digits
from deepfast.defenses.detection import detection_report
from deepfast.demo.context import Demo
from deepfast.demo.generative import stack
from deepfast.demo.report import Section
from deepfast.metrics import predict_proba

EPS = (0.05, 0.1, 0.2)


def robustness_section(demo: Demo, section: Section) -> None:
    x, y = stack(digits("val"))
    steps = 2 if demo.smoke else 40
    pgd = functools.partial(PGD, steps=steps, alpha=2.5 * max(EPS) / steps)
    apgd = functools.partial(APGDDLR, steps=steps)
    models = {"standard training": demo.judge}
    epochs = demo.epochs(20, 60)
    for name, defense in (("adversarial training (PGD-10, eps 0.2)", "at"), ("adversarial logit pairing", "alp")):
        trainer = demo.train(f"classifier_{defense}", model="classifier", epochs=epochs, lr=3e-3,
                             options={"adversarial": "pgd", "defense": defense, "eps": max(EPS)})
        models[name] = trainer.model
    rows = []
    for name, model in models.items():
        result = evaluate(model, (x, y), attacks=[pgd, apgd], eps=EPS, progress=demo.progress)
        row = {"classifier": name, "clean": result.clean_accuracy}
        for i, e in enumerate(EPS):
            row[f"PGD-{steps} eps {e}"] = result.accuracy_after["PGD"][i]
            row[f"+ APGD-DLR eps {e}"] = result.robust_accuracy[i]
        rows.append(row)
    section.text(f"Accuracy on the {len(y)} held-out digits, clean, under Linf PGD-{steps} (random start, "
                 f"alpha = 2.5 eps / steps) and under the worst of PGD-{steps} and APGD with the DLR loss "
                 f"({steps} steps, run on the digits PGD left; deepfast.attacks.evaluate) at each eps, pixels "
                 "in [0, 1]. The "
                 f"defended LeNets trained {epochs} epochs on CE(x) + CE(x_adv) (Madry-style adversarial "
                 "training) and on CE(x) + ||f(x) - f(x_adv)||^2 (logit pairing), x_adv from PGD-10 at eps 0.2.")
    section.table(rows, "accuracy (fractions of the held-out digits)")
    demo.results["robustness"] = rows
    # a picture: originals, PGD examples against the standard classifier, amplified perturbations
    shown = x[:10]
    adv = PGD(demo.judge, eps=max(EPS), alpha=2.5 * max(EPS) / steps, steps=steps)(shown, y[:10])
    delta = adv - shown
    amplified = 0.5 + delta / (2 * delta.abs().max().clamp_min(1e-12))
    before = predict_proba(demo.judge, shown).argmax(1).tolist()
    after = predict_proba(demo.judge, adv).argmax(1).tolist()
    section.image(demo.save("adversarial", torch.cat([shown, adv, amplified]), nrow=10, scale=2),
                  f"rows: held-out digits (predicted {before}), PGD-{steps} at eps {max(EPS)} against the standard "
                  f"classifier (predicted {after}), the perturbation amplified (gray = 0)")
    # detection
    train_x, train_y = stack(digits("train"), 1438 if not demo.smoke else 64)
    report = detection_report(demo.judge, "classifier.3", (train_x, train_y), (x, y), eps=0.1, steps=steps)
    section.text("A SafetyNet-style detector (deepfast.defenses.detection: an MLP on the classifier's penultimate "
                 "ReLU activations) trained on clean training digits against their FGSM and PGD examples at eps "
                 "0.1, then tested on held-out digits, including an adaptive attack that also fights the detector.")
    section.table([{k: v for k, v in vars(r).items()} for r in report.rows], "detection on held-out digits")
