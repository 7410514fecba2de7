"""`deepfast attack` and `deepfast detect`: robustness of a classifier checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from deepfast.cli.training import add_trust_flag


def number_list(name: str, parse=float):
    """An argparse type: "a,b,c" -> [a, b, c], each parsed by ``parse``; errors name the flag."""

    def convert(text: str) -> list:
        try:
            values = [parse(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes comma-separated numbers, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"{name} takes comma-separated numbers, got {text!r}")
        return values

    return convert


def attack_names(text: str) -> list[str]:
    """An argparse type: "pgd,square" -> names of deepfast.attacks.ATTACKS."""
    from deepfast.attacks import ATTACKS

    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown attack {', '.join(map(repr, unknown)) or repr(text)}; "
                                         f"known: {', '.join(ATTACKS)}")
    return names


def adaptive_losses(text: str) -> list[str]:
    """An argparse type: "softplus,logit" -> names of deepfast.defenses.detection.ADAPTIVE_LOSSES."""
    from deepfast.defenses.detection import ADAPTIVE_LOSSES

    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names or any(n not in ADAPTIVE_LOSSES for n in names):
        raise argparse.ArgumentTypeError(f"takes {', '.join(ADAPTIVE_LOSSES)} (comma-separated), got {text!r}")
    return names


def load_classifier(args: argparse.Namespace):
    """The classifier trainer of --ckpt (its model in eval mode); an error naming --ckpt for another kind."""
    from deepfast.train import load_trainer

    trainer = load_trainer(args.ckpt, device=args.device, trusted=args.trust_checkpoint)
    if trainer.name != "classifier":
        raise ValueError(f"--ckpt: {args.ckpt} is a {trainer.name} checkpoint, not a classifier "
                         "(train one with `deepfast train classifier`)")
    return trainer


def labelled_images(args: argparse.Namespace, trainer, split: str, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (n, C, H, W), labels (n,)): the first ``n`` (None: all) items of ``split`` ("val" or "train")
    of --data (default: the checkpoint's dataset)."""
    from deepfast.train.data import load_split

    name = args.data or trainer.config.data
    data = load_split(name, split == "train", trainer.value_range, trainer.config.image_size)
    if data is None:
        raise ValueError(f"--data: {name!r} has no {split} split")
    if n is not None and n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    items = [data[i] for i in range(len(data) if n is None else min(n, len(data)))]
    if not isinstance(items[0], (tuple, list)):
        raise ValueError(f"--data: {name!r} has no labels")
    return torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])


def attack_factories(names: list[str], args: argparse.Namespace) -> list:
    """The attack classes ``names`` with the settings given on the command line (--steps, --alpha, --norm,
    each passed to the attacks that take it; one that none of them takes is an error naming the flag),
    --seed and --amp (every attack takes them)."""
    import functools
    import inspect

    from deepfast.attacks import ATTACKS

    kwargs = [{"seed": args.seed, "amp": args.amp} for _ in names]
    for key in ("steps", "alpha", "norm"):
        value = getattr(args, key)
        if value is None:
            continue
        takers = [i for i, name in enumerate(names) if key in inspect.signature(ATTACKS[name].__init__).parameters]
        if not takers:
            raise ValueError(f"--{key} does not apply to attack {', '.join(map(repr, names))}")
        for i in takers:
            kwargs[i][key] = value
    return [functools.partial(ATTACKS[name], **kw) for name, kw in zip(names, kwargs)]


def attack(args: argparse.Namespace) -> int:
    """Robust accuracy of a classifier checkpoint against attacks at several eps, and a PNG of examples."""
    from deepfast.attacks import evaluate
    from deepfast.grid import save_grid

    for e in args.eps:
        if not e >= 0 or e == float("inf"):
            raise ValueError(f"--eps values must be finite and >= 0, got {e}")
    for flag, value in (("--show", args.show), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    trainer = load_classifier(args)
    images, labels = labelled_images(args, trainer, args.split, args.n)
    model = trainer.model
    factories = attack_factories(args.attack, args)
    result = evaluate(model, (images, labels), factories, args.eps, batch_size=args.batch_size,
                      progress=args.progress)
    print(f"{args.ckpt}: {', '.join(args.attack)} on {args.data or trainer.config.data} ({args.split})")
    print(result.table())
    # The picture: originals, then per eps the first attack's examples and their perturbation, amplified.
    x, y = images[: args.show], labels[: args.show]
    device = next(model.parameters()).device
    with torch.no_grad():
        pred = model(x.to(device)).argmax(1).cpu()
    rows, texts, colors = [x], [f"y={int(t)} p={int(p)}" for t, p in zip(y, pred)], []
    colors += ["white" if p == t else "red" for t, p in zip(y, pred)]
    for e in args.eps:
        adv = factories[0](model, eps=e)(x, y)
        with torch.no_grad():
            pred = model(adv.to(device)).argmax(1).cpu()
        delta = adv - x
        scale = delta.abs().amax().item() or 1.0
        rows += [adv, 0.5 + delta / (2 * scale)]
        texts += [f"p={int(p)}" for p in pred] + [f"eps={e:g}" if i == 0 else "" for i in range(len(x))]
        colors += ["white" if p == t else "red" for t, p in zip(y, pred)] + ["white"] * len(x)
    out = Path(args.out or Path(args.ckpt).with_name("attack.png"))
    save_grid(torch.cat(rows), out, nrow=len(x), scale=3, labels=texts, colors=colors)
    print(f"wrote {out}: rows original (y = label, p = prediction), then per eps: adversarial, perturbation "
          "(gray = 0, amplified to the largest change)")
    return 0


def detect(args: argparse.Namespace) -> int:
    """Train an adversarial-example detector on a classifier layer and report its ROC-AUCs."""
    from deepfast.defenses.detection import detection_report

    if not args.eps >= 0 or args.eps == float("inf"):
        raise ValueError(f"--eps must be finite and >= 0, got {args.eps}")
    trainer = load_classifier(args)
    test = labelled_images(args, trainer, "val", args.n)
    train = labelled_images(args, trainer, "train", args.n_train)
    report = detection_report(trainer.model, args.layer, train, test, args.eps, steps=args.steps, c=args.c,
                              detector_losses=args.adaptive_loss, hidden=args.hidden, seed=args.seed)
    print(report.table())
    return 0


def add_parsers(commands) -> None:
    def common(p: argparse.ArgumentParser, n_help: str) -> None:
        p.add_argument("--ckpt", required=True, help="a classifier checkpoint of `deepfast train classifier` (OUT/last.pt)")
        p.add_argument("--data", help="dataset (default: the checkpoint's); its held-out split is attacked")
        p.add_argument("--n", type=int, help=n_help)
        p.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts (default 0)")
        p.add_argument("--device", help="cpu or cuda (default cpu)")
        add_trust_flag(p, "load --ckpt")

    p = commands.add_parser(
        "attack", help="robust accuracy of a classifier checkpoint, and a PNG of adversarial examples",
        description="Attack a classifier checkpoint on held-out images at each eps (Linf, or L2 with --norm 2, "
                    "in [0, 1] pixels): print clean and robust accuracy (worst case per image over the attacks, "
                    "deepfast.attacks.evaluate) and write a PNG grid: the first --show images with their label y "
                    "and prediction p, then for each eps the first attack's adversarial examples (wrong "
                    "predictions in red) and their perturbations (gray = 0, amplified to the largest change). "
                    "Example: deepfast attack --ckpt runs/classifier/last.pt --attack pgd --eps 0.05,0.1,0.2,0.3 --steps 40")
    common(p, "attack the first N images (default: all)")
    p.set_defaults(func=attack)
    p.add_argument("--split", choices=["val", "train"], default="val", help="which split (default val)")
    p.add_argument("--attack", type=attack_names, default=["pgd"],
                   help="attack(s), comma-separated: fgsm, pgd, bim, mifgsm, apgd, apgd-dlr, eot, square (default pgd)")
    p.add_argument("--eps", type=number_list("--eps"), default=[0.3], help="budgets, comma-separated (default 0.3)")
    p.add_argument("--steps", type=int, help="steps of the iterative attacks (their default: 10); --alpha and "
                                             "--norm too go to the attacks that take them")
    p.add_argument("--alpha", type=float, help="step size (default: 2.5 * eps / steps for PGD)")
    p.add_argument("--norm", choices=["inf", "2"], help="Linf (default) or L2 ball")
    p.add_argument("--amp", choices=["bf16", "fp16"], help="run the model under autocast in this dtype")
    p.add_argument("--batch-size", type=int, default=256, help="images per attack batch (default 256)")
    p.add_argument("--show", type=int, default=8, help="images in the PNG (default 8)")
    p.add_argument("--out", help="PNG file (default: attack.png beside the checkpoint)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    p = commands.add_parser(
        "detect", help="train an adversarial-example detector on a classifier's activations; its ROC-AUCs",
        description="SafetyNet-style detection (deepfast.defenses.detection): record the activations of "
                    "--layer (a forward hook), train a small MLP on clean training images against their FGSM and "
                    "PGD examples at --eps, then report on held-out images the share of images each attack "
                    "fools the classifier on, the detector's ROC-AUC (clean vs those fooling examples) and the "
                    "share flagged, for FGSM, PGD and an adaptive PGD that also lowers the detector logit d "
                    "(by c * softplus(d) or c * d).")
    common(p, "held-out images to test on (default: all)")
    p.set_defaults(func=detect)
    p.add_argument("--n-train", type=int, help="training images for the detector (default: all)")
    p.add_argument("--layer", default="classifier.3", help="layer name (default classifier.3: LeNet's penultimate ReLU)")
    p.add_argument("--eps", type=float, default=0.3, help="Linf budget of the attacks (default 0.3)")
    p.add_argument("--steps", type=int, default=40, help="PGD steps (default 40)")
    p.add_argument("--c", type=number_list("--c"), default=[1.0, 10.0],
                   help="weights of the detector term of the adaptive attack, comma-separated (default 1,10)")
    p.add_argument("--adaptive-loss", type=adaptive_losses, default=["softplus", "logit"],
                   help="the detector term h(d) of the adaptive attack, comma-separated: softplus (c * softplus(d), "
                        "saturating), logit (c * d) (default both)")
    p.add_argument("--hidden", type=int, default=64, help="hidden units of the detector MLP (0: logistic regression)")
