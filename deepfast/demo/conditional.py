"""Demo section: a class-conditional DCGAN trained on a small labelled subset of the digits (10 a class),
whose generated labelled digits are added to that subset to train a classifier: accuracy on the
held-out digits with and without them."""

from __future__ import annotations

import torch

from deepfast.data import digits
from deepfast.demo.context import Demo, export, stack
from deepfast.demo.generative import GAN_OPTIONS, judge_row
from deepfast.demo.report import Section
from deepfast.metrics import predict_proba

PER_CLASS = 10  # labelled digits per class
GENERATED_PER_CLASS = 100


def labelled_subset(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` training digits of each class: images (10 per_class, 1, 32, 32), labels."""
    x, y = stack(digits("train"))
    keep = torch.cat([(y == k).nonzero()[:per_class, 0] for k in range(10)])
    return x[keep], y[keep]


def conditional_section(demo: Demo, section: Section) -> None:
    root = demo.out / "data" / "conditional"
    x, y = labelled_subset(PER_CLASS)
    val_x, val_y = stack(digits("val"))
    if not (root / "done").exists():
        export(x, y, root / "real")
        (root / "done").touch()
    # 100 digits, batch 16: 6 steps an epoch
    epochs = demo.epochs(150, 500)
    trainer = demo.train(
        "cdcgan",
        model="cdcgan",
        data=f"folder:{root / 'real'}",
        epochs=epochs,
        batch_size=16,
        image_size=32,
        sample_every=50,
        options={"ngf": 32, "ndf": 32, **GAN_OPTIONS},
    )
    g = trainer.generator
    torch.manual_seed(2)
    labels = torch.arange(10).repeat_interleave(GENERATED_PER_CLASS)
    with torch.no_grad():
        g.eval()
        generated = (torch.cat([g(torch.randn(len(c), g.nz), c) for c in labels.split(500)]) + 1) / 2
    agree = (predict_proba(demo.judge, generated).argmax(1) == labels).double().mean().item()
    if not (root / "generated_done").exists():
        export(torch.cat([x, generated]), torch.cat([y, labels]), root / "augmented")
        (root / "generated_done").touch()
    clf = {"model": "classifier", "options": {"arch": "lenet"}, "batch_size": 16}
    accuracy = {}
    for name, folder, n_epochs in (
        ("real only", "real", demo.epochs(60, 100)),
        ("real + generated", "augmented", demo.epochs(6, 10)),
    ):
        run = demo.train(f"cdcgan_classifier_{folder}", data=f"folder:{root / folder}", epochs=n_epochs, **clf)
        accuracy[name] = (predict_proba(run.model, val_x).argmax(1) == val_y).double().mean().item()
    n_real, n_gen = len(y), len(labels)
    section.text(
        f"deepfast.models.ConditionalGenerator (z and a learned class embedding) and "
        "ConditionalDiscriminator (a projection discriminator), trainer cdcgan (`deepfast train cdcgan`), "
        f"trained {epochs} epochs of batch 16 on only {n_real} labelled digits ({PER_CLASS} a class; "
        "DiffAugment on every image D sees: without it D learns the 100 digits by heart, D(x) 0.99 and "
        f"D(G(z)) 0.02 by epoch 16). It then generates {GENERATED_PER_CLASS} "
        f"digits of each class; the judge gives {agree:.1%} of them the class they were generated for. The "
        f"same LeNet is trained on the {n_real} real digits alone ({demo.epochs(60, 100)} epochs of batch 16) "
        f"and on them with the {n_gen} generated ones ({demo.epochs(6, 10)} epochs, about as many steps), "
        f"and scored on the {len(val_y)} held-out digits. No digit outside the {n_real} is used by either."
    )
    rows = [
        {"classifier trained on": f"{n_real} real labelled digits", "held-out accuracy": accuracy["real only"]},
        {
            "classifier trained on": f"the same + {n_gen} generated labelled digits",
            "held-out accuracy": accuracy["real + generated"],
        },
        {
            "classifier trained on": "gain (points)",
            "held-out accuracy": 100 * (accuracy["real + generated"] - accuracy["real only"]),
        },
    ]
    section.table(rows)
    section.table([judge_row(demo, "generated digits", generated)], "the judge on the generated digits")
    with torch.no_grad():
        grid = (g(torch.randn(100, g.nz), torch.arange(10).repeat_interleave(10)) + 1) / 2
    section.image(demo.save("cdcgan_samples", grid, nrow=10, scale=2), "G(z, y): one row per class y = 0..9")
    demo.results["conditional"] = {"accuracy": rows, "judge agrees with the label": agree}
