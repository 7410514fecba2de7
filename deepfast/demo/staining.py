"""Demo section: virtual staining IHC -> H&E-like with CycleGAN, with and without the saliency
constraint, scored by PSNR / SSIM against the known re-stained ground truth of held-out patches."""

from __future__ import annotations

import torch

from deepfast.data import stain_domains
from deepfast.demo.context import Demo
from deepfast.demo.report import Section
from deepfast.metrics import psnr, ssim


def staining_section(demo: Demo, section: Section) -> None:
    size = demo.pick(32, 64)
    epochs = demo.epochs(8, 60)
    test = stain_domains("test", patch_size=size, value_range=(-1.0, 1.0))
    a = torch.stack([test[i][0] for i in range(len(test))])
    truth = torch.stack([test[i][1] for i in range(len(test))])
    section.text(f"Domain A: {size}x{size} patches of scikit-image's immunohistochemistry image (DAB + "
                 "haematoxylin). Domain B: patches from other regions of the same image re-stained to an H&E-like "
                 "look by colour deconvolution and recombination (deepfast.data.stain_domains), unpaired in "
                 f"training. {len(test)} held-out A patches have their B ground truth. CycleGAN (ResNet generators "
                 "with 6 blocks, ngf 32, PatchGAN with ndf 32, LSGAN, cycle 10, identity 0.5, pools of 50), "
                 f"{epochs} epochs of batch 1; then the same with the saliency constraint of Li et al. 2021 "
                 "(weight 1, decaying to 0).")
    to01 = lambda t: (t + 1) / 2  # noqa: E731
    rows = [{"translation": "none (input A vs truth)", "PSNR dB": psnr(to01(a), to01(truth)).mean().item(),
             "SSIM": ssim(to01(a), to01(truth)).mean().item()}]
    grid = [a[:8]]
    for name, saliency in (("CycleGAN", 0.0), ("CycleGAN + saliency", 1.0)):
        trainer = demo.train(f"stain{'_saliency' if saliency else ''}", model="cyclegan", data="stain", epochs=epochs,
                             image_size=size, options={"saliency": saliency, "ndf": 32})
        with torch.no_grad():
            fake = trainer.g_a(a).clamp(-1, 1)
        rows.append({"translation": name, "PSNR dB": psnr(to01(fake), to01(truth)).mean().item(),
                     "SSIM": ssim(to01(fake), to01(truth)).mean().item()})
        grid.append(fake[:8])
    grid.append(truth[:8])
    section.table(rows, "held-out patches, against the re-stained ground truth (higher is better)")
    section.image(demo.save("staining", torch.cat(grid), nrow=8, value_range=(-1, 1), scale=max(1, 64 // size)),
                  "rows: IHC input, CycleGAN, CycleGAN + saliency, ground truth")
    demo.results["staining"] = rows
