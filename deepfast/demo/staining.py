"""Demo section: virtual staining IHC -> H&E-like with CycleGAN, with and without the saliency constraint
of UTOM (Li et al. 2021), on domains of like tissue proportions and on domains where they differ; scored
by PSNR / SSIM against the known re-stained ground truth of held-out patches, and by the overlap (IoU)
of the tissue masks of each input and its translation."""

from __future__ import annotations

import torch
from torch import Tensor

from deepfast.data import stain_domains, stain_domains_skewed
from deepfast.demo.context import Demo
from deepfast.demo.report import Section
from deepfast.metrics import psnr, ssim

# The CycleGAN of the section: per-pixel generators (deepfast.models.PixelGenerator: re-staining changes
# colours and keeps every structure, and a generator that sees one pixel cannot paint texture or
# checkerboards) with an input skip, no identity loss (it holds the translation at the input's colours), Adam
# 1e-3, PatchGAN discriminators. Measured on stain_skewed, 3 epochs (SSIM / PSNR of CycleGAN + saliency):
# identity 0.5 and lr 2e-4 0.66 / 12.3 dB (the colours hardly change); lr 1e-3 0.65 / 10.8; no identity loss
# 0.72 / 15.0 dB but pale (weight 1: tissue IoU gain -0.005); saliency weight 10: 0.72 / 18.0 dB, IoU gain +0.80
# (the plain CycleGAN's tissue IoU 0.16), after 6 epochs 0.72 / 18.5 dB, but the plain one keeps the tissue then
# too (IoU 0.98, gain -0.03). Those with N(0, 0.02) hidden layers; with PixelGenerator's init now 0.70 / 17.4 dB,
# IoU 0.55 -> 0.99. On the balanced domains, 1 epoch (253 steps), no saliency: 0.79 / 19.8 dB.
CYCLEGAN = {"generator": "pixel", "ngf": 32, "ndf": 32, "skip": True, "lambda_identity": 0.0}
LR = 1e-3
EPOCHS = 3
SALIENCY = 10.0  # the constraint's weight (decaying linearly to 0 over the run)
DOMAINS = {"stain": ("like tissue proportions", stain_domains),
           "stain_skewed": ("A mostly tissue, B mostly background", stain_domains_skewed)}


def otsu(images: Tensor) -> float:
    """Otsu's threshold of the per-pixel channel mean of images (N, 3, H, W) in [0, 1]."""
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(images.mean(1).numpy()))


def mask_iou(x: Tensor, y: Tensor, tau_x: float, tau_y: float) -> Tensor:
    """IoU (N,) of the tissue masks (channel mean < tau) of images x and y (N, 3, H, W) in [0, 1]
    (1 where both masks are empty)."""
    mx, my = x.mean(1) < tau_x, y.mean(1) < tau_y
    inter, union = (mx & my).flatten(1).sum(1), (mx | my).flatten(1).sum(1)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter, dtype=torch.float)).double()


def staining_section(demo: Demo, section: Section) -> None:
    size = demo.pick(32, 64)
    epochs = demo.epochs(EPOCHS, 20)
    to01 = lambda t: (t + 1) / 2  # noqa: E731
    section.text(f"Domain A: {size}x{size} patches of scikit-image's immunohistochemistry image (DAB + "
                 "haematoxylin). Domain B: patches from other regions of the same image re-stained to an H&E-like "
                 "look by colour deconvolution and recombination (deepfast.data.stain_domains), unpaired in "
                 "training (overlapping patches, stride size / 4). Held-out A patches have their B ground truth. "
                 f"CycleGAN (per-pixel generators, deepfast.models.PixelGenerator: three 1x1 convolutions "
                 f"{CYCLEGAN['ngf']} wide and an input skip, each output pixel a function of the same input pixel's "
                 "colour, since re-staining changes colours and keeps every structure; PatchGAN with ndf "
                 f"{CYCLEGAN['ndf']}; LSGAN, cycle 10, no identity loss, pools of 50, Adam {LR:g}), {epochs} epochs of "
                 "batch 4; then the same with the saliency constraint of UTOM (Li et al. 2021; weight "
                 f"{SALIENCY:g}, decaying to 0), whose "
                 "tissue thresholds are Otsu's threshold of each training domain. Two settings: the domains with "
                 "like tissue proportions (with --full), and stain_skewed, where A patches are mostly tissue and B "
                 "patches mostly background: there an unconstrained translation is pushed to turn tissue into "
                 "background. "
                 "IoU: overlap of the tissue masks (pixels darker than the domain's threshold) of each input and its "
                 "translation; the ground truth's own IoU is the reference, since re-staining changes which pixels "
                 "are dark.")
    rows, grids = [], []
    settings = DOMAINS if demo.full else {"stain_skewed": DOMAINS["stain_skewed"]}
    for data, (description, domains) in settings.items():
        train = domains("train", patch_size=size)
        tau_a = otsu(torch.stack([train.a[i] for i in range(len(train.a))]))
        tau_b = otsu(torch.stack([train.b[i] for i in range(len(train.b))]))
        test = domains("test", patch_size=size, value_range=(-1.0, 1.0))
        a = torch.stack([test[i][0] for i in range(len(test))])
        truth = torch.stack([test[i][1] for i in range(len(test))])

        def row(name: str, image: Tensor) -> dict:
            return {"domains": f"{data} ({description})", "translation": name,
                    "PSNR dB": psnr(to01(image), to01(truth)).mean().item(),
                    "SSIM": ssim(to01(image), to01(truth)).mean().item(),
                    "tissue mask IoU": mask_iou(to01(a), to01(image), tau_a, tau_b).mean().item()}

        rows += [row("none (input A)", a), row("ground truth", truth)]
        grid = [a[:8]]
        for name, saliency in (("CycleGAN", 0.0), ("CycleGAN + saliency", SALIENCY)):
            options = {**CYCLEGAN, "saliency": saliency, "saliency_tau": round(tau_a, 4), "saliency_tau_b": round(tau_b, 4)}
            trainer = demo.train(f"{data}{'_saliency' if saliency else ''}", model="cyclegan", data=data,
                                 epochs=epochs, image_size=size, batch_size=4, lr=LR, options=options)
            with torch.no_grad():
                fake = trainer.g_a(a).clamp(-1, 1)
            rows.append(row(name, fake))
            grid.append(fake[:8])
        grid.append(truth[:8])
        grids.append((data, description, grid))
    section.table(rows, "held-out patches against the re-stained ground truth (PSNR, SSIM: higher is better), and "
                        "the tissue-mask overlap of input and translation")
    for data, description, grid in grids:
        section.image(demo.save(f"staining_{data}", torch.cat(grid), nrow=8, value_range=(-1, 1),
                                scale=max(1, 128 // size)),
                      f"{data} ({description}) rows: IHC input, CycleGAN, CycleGAN + saliency, ground truth")
    demo.results["staining"] = rows
    skewed = {r["translation"]: r for r in rows if r["domains"].startswith("stain_skewed")}
    demo.target("staining SSIM (stain_skewed, CycleGAN + saliency)", skewed["CycleGAN + saliency"]["SSIM"], 0.85)
    demo.target("staining PSNR dB (stain_skewed, CycleGAN + saliency)", skewed["CycleGAN + saliency"]["PSNR dB"], 24)
    demo.target("stain_skewed: tissue IoU gain of the saliency constraint",
                skewed["CycleGAN + saliency"]["tissue mask IoU"] - skewed["CycleGAN"]["tissue mask IoU"], 0.0)
