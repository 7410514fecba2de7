"""Demo sections: the digits classifier that judges generated images, the VAE's latent space
(samples, interpolation, 2-D sweep, attribute arithmetic) and DCGAN's (samples, z arithmetic)."""

from __future__ import annotations

import torch
from torch import Tensor

from deepfast import latent
from deepfast.attributes import stroke_thickness
from deepfast.data import digits, resize
from deepfast.demo.context import Demo, stack
from deepfast.demo.report import Section
from deepfast.metrics import check_with_classifier, classifier_frechet_distance, predict_proba

VAE_EPOCHS, DCGAN_EPOCHS = 30, 30
# of the Gaussian mixture the VAE's samples are drawn from. Measured with the judge on one VAE (8 latents, 30
# epochs): N(0, I) 55% confident, Frechet 53; mixtures of 1 / 5 / 10 / 20 / 80: 58% / 75% / 87% / 90% / 92%,
# Frechet 47 / 24 / 19 / 15 / 14
MIXTURE_COMPONENTS = 20
# the DCGAN trainer's options of the demo's class-conditional DCGAN (100 digits: without DiffAugment D learns
# them by heart). An EMA generator (0.99, BatchNorm statistics recomputed for the averaged weights) did not
# help the small-subset classifier: the generated digits changed its accuracy by -8.4 / -10.0 points (the
# statistics from 1024 / 100 z each epoch) against -7.5 without EMA; the judge agreed with 84% of their labels
# instead of 92%
GAN_OPTIONS = {"upsample": "transposed", "ema": 0.0, "augment": "translation,cutout"}
# The demo's DCGAN makes 8x8 digits: the bundled digits are 8x8 scans, and the 32x32 digits the judge reads
# are their bilinear upscalings; its samples are upscaled the same way (as_digits). Measured with the judge
# (30 epochs of batch 16): at 32x32 (ngf 32, DiffAugment) 52% confident, Frechet 31; at 16x16 (ngf 32,
# DiffAugment) 39%, 79; at 8x8 (2 extra layers) with ngf 64 54%, 39 with DiffAugment and 65%, 27 without, and
# with ngf 128 without 70%, 20. From there (ngf 128, 30 epochs; one run each): hinge loss 65%, 16; LSGAN 64%,
# 17; one-sided label smoothing 0.9 68%, 27; spectral norm in D 69%, 10; top-k G steps (half the batch) 68%,
# 12; D's lr doubled 66%, 31; lr decaying linearly over the last 15 epochs 66%, 13; an EMA generator (0.999,
# 0.995) 68-69%, 10-16 with its BatchNorm statistics recomputed, 62%, 36 with G's copied. 43 epochs: 75%, Frechet 8
# (EMA 0.995 74%; with spectral norm 71%, with top-k 71%), but in a fresh make demo (2 threads) 69.6%, Frechet 16,
# and the section 115 s instead of 68 s put the demo at 616 s, over its 10 minutes: so 30 epochs
DCGAN_SIZE, DCGAN_NGF = 8, 128
DCGAN_OPTIONS = {"upsample": "transposed", "extra_layers": 2}


def as_digits(images: Tensor) -> Tensor:
    """Generated images (N, 1, S, S) in [-1, 1] as the judge's digits: (N, 1, 32, 32) in [0, 1], resized
    bilinearly as deepfast.data.digits resizes the 8x8 originals."""
    return resize((images + 1) / 2, (32, 32))


def judge_row(demo: Demo, name: str, images: Tensor) -> dict:
    """The judge's verdict on generated images (N, 1, 32, 32) in [0, 1] against the real held-out digits:
    the share classified with p >= 0.9, the classes present, the largest class's share in units of a
    uniform share (1 = every class 10%; above 2 = a class takes more than twice its share: mode collapse),
    and the Frechet distance on the judge's features."""
    real, _ = stack(digits("val"))
    check = check_with_classifier(demo.judge, images)
    return {
        "images": name,
        "n": images.shape[0],
        "confident (p >= 0.9)": check.confident,
        "classes present": int((check.histogram > 0).sum()),
        "largest class share / uniform": check.histogram.max().item() * len(check.histogram) / images.shape[0],
        "Frechet distance": classifier_frechet_distance(demo.judge, images, real),
    }


def judge_targets(demo: Demo, model: str, row: dict, confident: float) -> None:
    """The targets of generated digits: confident share, Frechet distance <= 25, 10 classes, largest <= 2x."""
    demo.target(f"{model} samples p >= 0.9", row["confident (p >= 0.9)"], confident)
    demo.target(f"{model} Frechet distance", row["Frechet distance"], 25, at_least=False)
    demo.target(f"{model} classes present", row["classes present"], 10)
    demo.target(f"{model} largest class share / uniform", row["largest class share / uniform"], 2, at_least=False)


def classifier_section(demo: Demo, section: Section) -> None:
    trainer = demo.train("classifier", model="classifier", epochs=demo.epochs(10, 20))
    demo.judge = trainer.model
    x, y = stack(digits("val"))
    acc = (predict_proba(demo.judge, x).argmax(1) == y).double().mean().item()
    train_x, _ = stack(digits("train"), 359)
    section.text(
        f"LeNet (deepfast.models.LeNet, fused layers) trained on the 1438 bundled training digits "
        f"(32x32) for {trainer.config.epochs} epochs. Held-out accuracy {acc:.1%} on 359 digits. It "
        "judges the generated images below: the share it classifies with confidence >= 0.9, how many "
        "of the 10 classes appear, and a Frechet distance on its penultimate features (FID's recipe "
        "without downloaded Inception weights; lower is closer to real digits)."
    )
    reference = judge_row(demo, "real training digits (reference)", train_x)
    section.table([reference])
    demo.results["judge"] = {"accuracy": acc, "real digits": reference}


def vae_section(demo: Demo, section: Section) -> None:
    # batch 32 (45 steps an epoch) and 8 latents: samples of N(0, I) land on digits more often than with
    # 16 latents and batch 128 (11 steps an epoch), measured with the judge
    trainer = demo.train(
        "vae", model="vae", epochs=demo.epochs(VAE_EPOCHS, 150), batch_size=32, options={"latent_dim": 8}
    )
    vae = trainer.vae
    val_x, val_y = stack(digits("val"))
    train_x, _ = stack(digits("train"))
    z_train = latent.encode(vae, train_x)
    # ex-post density estimation (Ghosh et al. 2020): samples of a mixture fitted to the training latents
    mixture = latent.fit_gaussian_mixture(z_train, MIXTURE_COMPONENTS)
    samples = latent.decode(vae, mixture.sample(1000, torch.Generator().manual_seed(0)))
    normal = latent.decode(vae, torch.randn(1000, vae.latent_dim, generator=torch.Generator().manual_seed(0)))
    section.text(
        f"VAE (deepfast.models.VAE: fused reparameterization + KL, fused BatchNorm + LeakyReLU), latent "
        f"size {vae.latent_dim}, {trainer.config.epochs} epochs of batch 32 on the digits. Its samples are "
        f"decode(z) with z drawn from a mixture of {MIXTURE_COMPONENTS} full-covariance Gaussians fitted to "
        "the latents (means mu(x)) of the training digits (deepfast.latent.fit_gaussian_mixture: ex-post "
        "density estimation, Ghosh et al. 2020): the encodings of the data do not fill the N(0, I) prior, "
        "and decodings of N(0, I) draws, shown beside, also land between the digits."
    )
    section.image(
        demo.save("vae_samples", samples[:100], nrow=10, scale=2),
        f"100 samples decode(z), z from the {MIXTURE_COMPONENTS}-component mixture fitted to the training latents",
    )
    section.image(
        demo.save("vae_samples_normal", normal[:100], nrow=10, scale=2),
        "100 samples decode(z), z ~ N(0, I) (the VAE's prior)",
    )
    recon = latent.decode(vae, latent.encode(vae, val_x[:10]))
    section.image(
        demo.save("vae_reconstructions", torch.cat([val_x[:10], recon]), nrow=10, scale=2),
        "held-out digits (top) and their reconstructions decode(mu(x)) (bottom)",
    )
    sample_row = judge_row(demo, f"VAE samples (1000), z ~ {MIXTURE_COMPONENTS}-Gaussian mixture fit", samples)
    table = [
        sample_row,
        judge_row(demo, "VAE samples (1000), z ~ N(0, I)", normal),
        judge_row(demo, "VAE reconstructions", latent.decode(vae, latent.encode(vae, val_x))),
    ]
    section.table(table)
    judge_targets(demo, "VAE", sample_row, 0.75)
    # interpolation between held-out digits of different classes
    first = lambda k: int((val_y == k).nonzero()[0])  # noqa: E731 - the first held-out digit of class k
    pairs = [(first(a), first(b)) for a, b in ((0, 6), (1, 7), (3, 8), (4, 9))]
    rows = {
        m: torch.cat([latent.interpolate_images(vae, val_x[i], val_x[j], steps=10, method=m) for i, j in pairs])
        for m in ("slerp", "linear")
    }
    section.image(
        demo.save("vae_interpolation", rows["slerp"], nrow=10, scale=2),
        "spherical interpolation between the latents of two held-out digits (0->6, 1->7, 3->8, 4->9)",
    )
    section.image(demo.save("vae_interpolation_linear", rows["linear"], nrow=10, scale=2), "the same, linear")
    # a 2-D sweep along the two principal directions of the training latents
    sweep = latent.latent_sweep(vae, z_train, steps=11, span=2.0)
    section.image(
        demo.save("vae_sweep", sweep.flatten(0, 1), nrow=11, scale=2),
        "navigating the digit manifold: mean latent +- 2 standard deviations along the two principal "
        "directions of the training latents (11 x 11)",
    )
    # attribute arithmetic: thick minus thin strokes, added to held-out digits
    thickness = stroke_thickness(train_x)
    thick, thin = latent.attribute_groups(thickness, 0.25)
    vector = latent.attribute_vector(z_train[thick], z_train[thin])
    scales = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]
    shifted = latent.add_attribute(vae, val_x[:12], vector, scales)  # (scales, 12, 1, 32, 32)
    section.image(
        demo.save("vae_attribute", shifted.flatten(0, 1), nrow=12, scale=2),
        "attribute vector 'stroke thickness' (mean latent of the thickest quarter of the training digits "
        "minus that of the thinnest) added to 12 held-out digits at scales -1, -0.5, 0, 0.5, 1, 1.5 (rows)",
    )
    originals = predict_proba(demo.judge, val_x[:12]).argmax(1)
    rows = []
    for s, images in zip(scales, shifted):
        same = (predict_proba(demo.judge, images).argmax(1) == originals).double().mean().item()
        rows.append(
            {
                "scale": s,
                "mean stroke thickness (px)": stroke_thickness(images).mean().item(),
                "judge keeps the class": same,
            }
        )
    section.table(rows, "the attribute's effect, measured on the decoded images")
    demo.results["vae"] = {"judge": table, "attribute": rows}


def dcgan_section(demo: Demo, section: Section) -> None:
    # batch 16: the 1438 digits give 89 steps an epoch; with 64 (22 steps) D wins for the first ~300 steps
    trainer = demo.train(
        "dcgan",
        model="dcgan",
        epochs=demo.epochs(DCGAN_EPOCHS, 60),
        batch_size=16,
        image_size=DCGAN_SIZE,
        options={"ngf": DCGAN_NGF, "ndf": DCGAN_NGF, **DCGAN_OPTIONS},
    )
    g = trainer.generator
    torch.manual_seed(1)
    z = torch.randn(1000, g.nz)
    images = as_digits(latent.decode(g, z))
    section.text(
        f"DCGAN (deepfast.models.Generator / Discriminator, ngf = ndf = {DCGAN_NGF}, nz = {g.nz}, "
        f"{DCGAN_OPTIONS['extra_layers']} extra 3x3 conv layers in each, fused BatchNorm + ReLU / LeakyReLU, "
        f"{DCGAN_OPTIONS['upsample']} upsampling) trained {trainer.config.epochs} epochs of batch 16 on the "
        f"digits at {DCGAN_SIZE}x{DCGAN_SIZE} in [-1, 1]: the bundled digits are 8x8 scans, the judge's "
        "32x32 digits their bilinear upscalings, and the samples are upscaled the same way. Adam 2e-4, betas "
        "(0.5, 0.999), non-saturating generator loss."
    )
    section.image(demo.save("dcgan_samples", images[:100], nrow=10, scale=2), "100 samples G(z)")
    sample_row = judge_row(demo, "DCGAN samples", images)
    section.table([sample_row])
    judge_targets(demo, "DCGAN", sample_row, 0.85)
    # z arithmetic: mean z of class k + (mean z of thick samples - mean z of thin samples)
    labels = predict_proba(demo.judge, images).argmax(1)
    thick, thin = latent.attribute_groups(stroke_thickness(images), 0.25)
    base, moved, rows = [], [], []
    for k in range(10):
        if not (labels == k).any():
            continue
        c = z[labels == k]
        base.append(c.mean(0))
        moved.append(latent.mean_arithmetic(z[thick], z[thin], c))
    before, after = (as_digits(latent.decode(g, torch.stack(v))) for v in (base, moved))
    section.image(
        demo.save("dcgan_arithmetic", torch.cat([before, after]), nrow=len(base), scale=2),
        "z arithmetic: G(mean z of the samples the judge calls k) (top) and G(mean z[thick] - mean z[thin] "
        "+ mean z[k]) (bottom), for each class k",
    )
    for name, x in (("mean z of class k", before), ("+ thick - thin", after)):
        rows.append({"images": name, "mean stroke thickness (px)": stroke_thickness(x).mean().item()})
    section.table(rows)
    demo.results["dcgan"] = {"judge": [sample_row], "arithmetic": rows}
