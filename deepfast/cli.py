"""The `deepfast` command line (also `python -m deepfast`)."""

from __future__ import annotations

import argparse
import ast
import platform
import sys
from pathlib import Path

import torch

import deepfast
from deepfast import backends


def info(args: argparse.Namespace) -> int:
    """Print versions, the build of deepfast._C, and every backend with why it is missing."""
    print(f"deepfast {deepfast.__version__}  torch {torch.__version__}  python {platform.python_version()}")
    ext = backends.extension
    if ext is not None:
        archs = f", CUDA archs {ext.cuda_archs}" if ext.cuda_archs else ""
        print(f"deepfast._C {ext.version}: built against torch {ext.torch_version}, kernels {', '.join(ext.backends)}"
              f"{archs}, OpenMP {'on' if ext.openmp else 'off'}")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"CUDA GPU: {gpu}")
    print("\nbackend  available  detail")
    for name, status in backends.status().items():
        print(f"{name:<8} {'yes' if status.available else 'no':<10} {status.detail}")
    print()
    if backends.forced() is not None:
        print(f"forced: {backends.forced()}")
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        try:
            print(f"{device} tensors run on: {backends.select(torch.device(device))}")
        except (backends.BackendUnavailable, ValueError, FileNotFoundError) as exc:
            print(f"{device} tensors: error: {exc}")
    return 0


def parse_option(text: str) -> tuple[str, object]:
    """"KEY=VALUE" -> (KEY, VALUE as a Python literal when it is one, else the string)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"options are KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def train(args: argparse.Namespace) -> int:
    """Train a model; with --resume, continue the run in --out (its saved settings, unless given here)."""
    from deepfast.train import TrainConfig, TrainingDiverged, load_checkpoint, make_trainer

    given = {k: v for k, v in vars(args).items() if k in TRAIN_FIELDS and v is not None}
    given["options"] = dict(args.option or [])
    given["options"].update({k: v for k, v in vars(args).items() if k in ADVERSARIAL_OPTIONS and v is not None})
    out = Path(given.get("out") or f"runs/{args.model}")
    adversarial = set(given["options"]) & set(ADVERSARIAL_OPTIONS)
    if adversarial and args.model != "classifier":
        raise ValueError(f"--{sorted(adversarial)[0].replace('_', '-')} is an option of the classifier trainer only")
    if args.resume:
        saved = load_checkpoint(out / "last.pt")["config"]
        if saved["model"] != args.model:
            raise ValueError(f"{out / 'last.pt'} is a {saved['model']} run, not {args.model}")
        config = TrainConfig.from_dict({**saved, **given, "options": {**saved["options"], **given["options"]}})
    else:
        config = TrainConfig(model=args.model, **given)
    if adversarial - {"adversarial"} and config.options.get("adversarial") is None:
        flag = sorted(adversarial - {"adversarial"})[0].replace("_", "-")
        raise ValueError(f"--{flag} sets up adversarial training: give --adversarial pgd (or fgsm) too")
    try:
        result = make_trainer(config).fit(resume=args.resume)
    except TrainingDiverged as exc:
        print(f"deepfast train: {exc}", file=sys.stderr)
        return 1
    if result.stopped:
        return 130
    if result.main:
        print(f"done: {result.epochs_done} epochs; checkpoint {result.checkpoint}; metrics {out / 'metrics.csv'}")
    return 0


def sample(args: argparse.Namespace) -> int:
    """Write a PNG grid of a checkpoint's samples (VAE, DCGAN) or held-out translations (ae, unet, cyclegan)."""
    from deepfast.train import load_trainer
    from deepfast.train.data import load_split

    trainer = load_trainer(args.ckpt, device=args.device, samples=args.n, seed=args.seed)
    cfg = trainer.config
    trainer.held_out = load_split(cfg.data, False, trainer.value_range, cfg.image_size)
    trainer.train_data = load_split(cfg.data, True, trainer.value_range, cfg.image_size)
    out = args.out or str(Path(args.ckpt).with_name("samples.png"))
    path = trainer.save_samples(Path(out))
    if path is None:
        raise ValueError(f"a {trainer.name} checkpoint has no samples to draw")
    print(f"wrote {path}")
    return 0


def demo(args: argparse.Namespace) -> int:
    """Train every model on bundled data and write OUT/report.html."""
    from deepfast.demo.run import run_demo

    only = [w for w in (args.only or "").split(",") if w]
    path, failed = run_demo(args.out, full=args.full, device=args.device, progress=not args.no_progress, only=only)
    print(f"wrote {path}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


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

    trainer = load_trainer(args.ckpt, device=args.device)
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
    --seed), each setting passed to the attacks that take it; one that none of them takes is an error
    naming the flag."""
    import functools
    import inspect

    from deepfast.attacks import ATTACKS

    kwargs = [{"seed": args.seed} for _ in names]
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


# TrainConfig fields that `deepfast train` options set (the option name with - for _).
TRAIN_FIELDS = ("data", "epochs", "batch_size", "lr", "out", "seed", "device", "amp", "channels_last", "compile",
                "backend", "impl", "sync_bn", "image_size", "max_batches", "sample_every", "samples", "progress")


# Classifier options that `deepfast train` flags set (the flag name with - for _).
ADVERSARIAL_OPTIONS = ("adversarial", "defense", "eps", "adv_steps", "adv_alpha", "adv_lambda")


def add_train_parser(commands) -> None:
    from deepfast.defenses import DEFENSES, TRAINING_ATTACKS
    from deepfast.train import TRAINERS

    p = commands.add_parser(
        "train", help="train a model on bundled or your data",
        description="Train a model. Every setting left out takes the trainer's default (the paper's values; "
                    "`deepfast train vae` alone trains on the bundled digits in a few CPU minutes). Writes "
                    "OUT/last.pt (every epoch and on Ctrl-C), OUT/metrics.csv and .jsonl, OUT/samples/*.png. "
                    "Under `torchrun --nproc_per_node=N -m deepfast train ...` it trains with DDP.")
    p.add_argument("model", choices=list(TRAINERS), help="what to train")
    p.add_argument("--data", help='dataset: digits, ihc, stain, mnist, cifar10, folder:PATH, unpaired:PATH')
    p.add_argument("--epochs", type=int, help="epochs to train (with --resume: the new total)")
    p.add_argument("--batch-size", type=int, help="global batch size (split over the processes)")
    p.add_argument("--lr", type=float, help="learning rate (Adam)")
    p.add_argument("--out", help="run folder (default runs/MODEL)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when there is one)")
    p.add_argument("--amp", choices=["bf16", "fp16"], help="mixed precision")
    p.add_argument("--channels-last", action="store_const", const=True, help="NHWC memory format")
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile the models")
    p.add_argument("--backend", choices=list(backends.BACKENDS), help="force a deepfast kernel backend")
    p.add_argument("--impl", choices=["fused", "reference"], help="deepfast fused layers (default) or plain torch")
    p.add_argument("--sync-bn", action="store_const", const=True, help="batch norm over all processes' batches")
    p.add_argument("--image-size", type=int, help="image size the data is resized to")
    p.add_argument("--max-batches", type=int, help="batches per epoch at most (quick runs)")
    p.add_argument("--sample-every", type=int, help="epochs between sample grids (0: none; default 1)")
    p.add_argument("--samples", type=int, help="images in a sample grid")
    p.add_argument("--no-progress", dest="progress", action="store_const", const=False, help="no progress bar")
    p.add_argument("-o", "--option", action="append", type=parse_option, metavar="KEY=VALUE",
                   help="a trainer option, e.g. -o beta=4 (vae), -o n_blocks=9 (cyclegan); see the README")
    adv = p.add_argument_group(
        "adversarial training (classifier)",
        "Train on adversarial examples made each step against the current model (in eval mode); these flags "
        "set the classifier options of the same names (-o eps=0.2 works too).")
    adv.add_argument("--adversarial", choices=TRAINING_ATTACKS,
                     help="the attack that makes the training examples (default: none, standard training)")
    adv.add_argument("--defense", choices=DEFENSES,
                     help="the loss: at = CE(x) + lambda CE(x_adv) (default), madry = lambda CE(x_adv), alp = CE(x) + "
                          "lambda ||f(x) - f(x_adv)||^2 (logit pairing), alp_mixed = the paper's mixed-batch ALP, "
                          "trades = CE(x) + lambda KL(p(x) || p(x_adv))")
    adv.add_argument("--eps", type=float, help="Linf radius in [0, 1] pixels (default 0.2: Madry et al.'s MNIST "
                                               "0.3 stalls LeNet on the bundled digits)")
    adv.add_argument("--adv-steps", type=int, help="PGD steps per training example (default 10)")
    adv.add_argument("--adv-alpha", type=float, help="PGD step size (default 2.5 * eps / steps)")
    adv.add_argument("--adv-lambda", type=float, help="weight of the adversarial term (default 1; trades: 6)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepfast", description=__doc__)
    parser.add_argument("--version", action="version", version=f"deepfast {deepfast.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("info", help="versions, build and available backends (and why the others are not)")
    add_train_parser(commands)
    p = commands.add_parser("sample", help="a PNG grid of samples or translations from a checkpoint")
    p.add_argument("--ckpt", required=True, help="a checkpoint written by `deepfast train` (OUT/last.pt)")
    p.add_argument("--n", type=int, default=64, help="images (VAE, DCGAN) or held-out inputs to draw")
    p.add_argument("--out", help="PNG file (default: samples.png beside the checkpoint)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent codes")
    p.add_argument("--device", help="cpu or cuda (default cpu)")
    p = commands.add_parser(
        "demo", help="train every model on bundled data and write an HTML report",
        description="The main job on bundled data: a digits classifier, a VAE and a DCGAN with their latent "
                    "spaces, CycleGAN virtual staining (with and without the saliency constraint), domain "
                    "adaptation, attacks and defenses, and fused vs reference step times, in OUT/report.html "
                    "(about 10 minutes on a 2-core CPU; --full for longer, better runs). Finished runs in OUT/runs "
                    "are reused and interrupted ones resumed, so a second call only redoes what is missing.")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--full", action="store_true", help="longer training, larger images")
    p.add_argument("--only", help="comma-separated words: run only the sections whose titles contain one")
    p.add_argument("--device", help="cpu or cuda (default: cuda when there is one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_robustness_parsers(commands)
    return parser


def add_robustness_parsers(commands) -> None:
    def common(p: argparse.ArgumentParser, n_help: str) -> None:
        p.add_argument("--ckpt", required=True, help="a classifier checkpoint of `deepfast train classifier` (OUT/last.pt)")
        p.add_argument("--data", help="dataset (default: the checkpoint's); its held-out split is attacked")
        p.add_argument("--n", type=int, help=n_help)
        p.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts (default 0)")
        p.add_argument("--device", help="cpu or cuda (default cpu)")

    p = commands.add_parser(
        "attack", help="robust accuracy of a classifier checkpoint, and a PNG of adversarial examples",
        description="Attack a classifier checkpoint on held-out images at each eps (Linf, or L2 with --norm 2, "
                    "in [0, 1] pixels): print clean and robust accuracy (worst case per image over the attacks, "
                    "deepfast.attacks.evaluate) and write a PNG grid: the first --show images with their label y "
                    "and prediction p, then for each eps the first attack's adversarial examples (wrong "
                    "predictions in red) and their perturbations (gray = 0, amplified to the largest change). "
                    "Example: deepfast attack --ckpt runs/classifier/last.pt --attack pgd --eps 0.05,0.1,0.2,0.3 --steps 40")
    common(p, "attack the first N images (default: all)")
    p.add_argument("--split", choices=["val", "train"], default="val", help="which split (default val)")
    p.add_argument("--attack", type=attack_names, default=["pgd"],
                   help="attack(s), comma-separated: fgsm, pgd, bim, mifgsm, eot, square (default pgd)")
    p.add_argument("--eps", type=number_list("--eps"), default=[0.3], help="budgets, comma-separated (default 0.3)")
    p.add_argument("--steps", type=int, help="steps of the iterative attacks (their default: 10); --alpha and "
                                             "--norm too go to the attacks that take them")
    p.add_argument("--alpha", type=float, help="step size (default: 2.5 * eps / steps for PGD)")
    p.add_argument("--norm", choices=["inf", "2"], help="Linf (default) or L2 ball")
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


COMMANDS = {"info": info, "train": train, "sample": sample, "attack": attack, "detect": detect, "demo": demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (backends.BackendUnavailable, ValueError, FileNotFoundError) as exc:
        print(f"deepfast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
