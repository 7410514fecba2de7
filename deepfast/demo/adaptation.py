"""Demo section: domain adaptation digits -> Digits-M (digits on coloured textures) by translating the
labelled source digits into the target style with CycleGAN and training the classifier on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from deepfast.data import digits, digits_m
from deepfast.demo.context import Demo
from deepfast.demo.report import Section
from deepfast.metrics import predict_proba


def export(images: Tensor, labels: Tensor | None, folder: Path) -> None:
    """Images (N, C, H, W) in [0, 1] as PNG files: folder/LABEL/NNNN.png (folder/NNNN.png without labels)."""
    for i, x in enumerate(images):
        sub = folder / str(int(labels[i])) if labels is not None else folder
        sub.mkdir(parents=True, exist_ok=True)
        array = (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(np.ascontiguousarray(array)).save(sub / f"{i:04d}.png")


def rgb(x: Tensor) -> Tensor:
    return x.expand(-1, 3, -1, -1)


def adaptation_section(demo: Demo, section: Section) -> None:
    root = demo.out / "data" / "adaptation"
    source = digits("train")
    half = len(source) // 2  # labelled source: the first half; unlabelled target: the other half's digits
    src_x = rgb(torch.stack([source[i][0] for i in range(half)]))
    src_y = torch.stack([source[i][1] for i in range(half)])
    target_train = digits_m("train")
    tgt_x = torch.stack([target_train[i][0] for i in range(half, len(target_train))])
    target_val = digits_m("val")
    val_x, val_y = (torch.stack(t) for t in zip(*(target_val[i] for i in range(len(target_val)))))
    if not (root / "done").exists():
        export(src_x, src_y, root / "source")
        export(src_x, None, root / "unpaired" / "trainA")
        export(tgt_x, None, root / "unpaired" / "trainB")
        (root / "done").touch()
    epochs = demo.epochs(6, 15)
    clf = {"model": "classifier", "epochs": demo.epochs(10, 20), "options": {"arch": "lenet"}}

    def target_accuracy(trainer) -> float:
        return (predict_proba(trainer.model, val_x).argmax(1) == val_y).double().mean().item()

    source_only = demo.train("adapt_source_only", data=f"folder:{root / 'source'}", **clf)
    cyclegan = demo.train("adapt_cyclegan", model="cyclegan", data=f"unpaired:{root / 'unpaired'}", epochs=epochs,
                          batch_size=4, image_size=32, options={"ngf": 32, "n_blocks": 6})
    if not (root / "translated_done").exists():
        with torch.no_grad():
            translated = torch.cat([cyclegan.g_a(x * 2 - 1) for x in src_x.split(256)])
        export((translated + 1) / 2, src_y, root / "translated")
        (root / "translated_done").touch()
    adapted = demo.train("adapt_translated", data=f"folder:{root / 'translated'}", **clf)
    before, after = target_accuracy(source_only), target_accuracy(adapted)
    rows = [{"classifier trained on": "source digits (no adaptation)", "target accuracy": before},
            {"classifier trained on": "source digits translated by CycleGAN", "target accuracy": after},
            {"classifier trained on": "gain (points)", "target accuracy": 100 * (after - before)}]
    section.text(f"Source: {half} labelled digits (gray). Target: Digits-M (deepfast.data.digits_m: digits blended "
                 "onto coloured texture patches of bundled pictures), whose labels are used only to score; the "
                 f"target training digits are other digits than the source ones. CycleGAN ({epochs} epochs, 32x32, "
                 f"batch 4, ngf {cyclegan.options['ngf']}) learns source <-> target from unpaired images; the same "
                 "LeNet is trained on the source images and on their translations, and scored on the "
                 f"{len(val_y)} held-out target digits.")
    section.table(rows)
    with torch.no_grad():
        examples = (cyclegan.g_a(src_x[:10] * 2 - 1) + 1) / 2
    section.image(demo.save("adaptation", torch.cat([src_x[:10], examples, val_x[:10]]), nrow=10, scale=2),
                  "rows: source digits, their CycleGAN translations, real target digits")
    demo.results["adaptation"] = rows
