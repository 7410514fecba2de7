"""`deepfast train` and `deepfast sample`."""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from deepfast import backends


def parse_option(text: str) -> tuple[str, object]:
    """ "KEY=VALUE" -> (KEY, VALUE as a Python literal when it is one, a float for "inf" / "nan" (the
    trainer then says whether the option takes it), else the string)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"options are KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass
    try:
        return key, float(value)
    except ValueError:
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
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    if args.resume:
        saved = load_checkpoint(out / "last.pt", trusted=args.trust_checkpoint)["config"]
        if saved["model"] != args.model:
            raise ValueError(f"{out / 'last.pt'} is a {saved['model']} run, not {args.model}")
        config = TrainConfig.from_dict({**saved, **given, "options": {**saved["options"], **given["options"]}})
    else:
        config = TrainConfig(model=args.model, **given)
    if adversarial - {"adversarial"} and config.options.get("adversarial") is None:
        flag = sorted(adversarial - {"adversarial"})[0].replace("_", "-")
        raise ValueError(f"--{flag} sets up adversarial training: give --adversarial pgd (or fgsm) too")
    try:
        result = make_trainer(config).fit(resume=args.resume, overwrite=args.overwrite, trusted=args.trust_checkpoint)
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

    trainer = load_trainer(args.ckpt, device=args.device, trusted=args.trust_checkpoint, samples=args.n, seed=args.seed)
    cfg = trainer.config
    trainer.held_out = load_split(cfg.data, False, trainer.value_range, cfg.image_size)
    trainer.train_data = load_split(cfg.data, True, trainer.value_range, cfg.image_size)
    out = args.out or str(Path(args.ckpt).with_name("samples.png"))
    path = trainer.save_samples(Path(out))
    if path is None:
        raise ValueError(f"a {trainer.name} checkpoint has no samples to draw")
    print(f"wrote {path}")
    return 0


# TrainConfig fields that `deepfast train` options set (the option name with - for _).
TRAIN_FIELDS = (
    "data",
    "epochs",
    "batch_size",
    "lr",
    "out",
    "seed",
    "device",
    "amp",
    "channels_last",
    "compile",
    "backend",
    "impl",
    "sync_bn",
    "image_size",
    "max_batches",
    "sample_every",
    "samples",
    "progress",
)


# Classifier options that `deepfast train` flags set (the flag name with - for _).
ADVERSARIAL_OPTIONS = ("adversarial", "defense", "eps", "adv_steps", "adv_alpha", "adv_lambda", "eps_warmup")


def add_trust_flag(p: argparse.ArgumentParser, what: str) -> None:
    """--trust-checkpoint: allow Python's full unpickler (load_checkpoint(trusted=True))."""
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help=f"{what} that only Python's full unpickler loads (an older deepfast's), which runs any code "
        "the file holds: only for files from a source you trust",
    )


def add_parsers(commands) -> None:
    from deepfast.defenses import DEFENSES, TRAINING_ATTACKS
    from deepfast.train import TRAINERS

    p = commands.add_parser(
        "train",
        help="train a model on bundled or your data",
        description="Train a model. Every setting left out takes the trainer's default (the paper's values; "
        "`deepfast train vae` alone trains on the bundled digits in a few CPU minutes). Writes "
        "OUT/last.pt (every epoch and on Ctrl-C), OUT/metrics.csv and .jsonl, OUT/samples/*.png. "
        "Under `torchrun --nproc_per_node=N -m deepfast train ...` it trains with DDP.",
    )
    p.add_argument("model", choices=list(TRAINERS), help="what to train")
    p.add_argument("--data", help="dataset: digits, ihc, stain, mnist, cifar10, folder:PATH, unpaired:PATH")
    p.add_argument("--epochs", type=int, help="epochs to train (with --resume: the new total)")
    p.add_argument("--batch-size", type=int, help="global batch size (split over the processes)")
    p.add_argument("--lr", type=float, help="learning rate (Adam)")
    p.add_argument("--out", help="run folder (default runs/MODEL)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run --out holds (without it a new run into a folder holding one is refused)",
    )
    add_trust_flag(p, "--resume from a checkpoint")
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
    p.add_argument(
        "-o",
        "--option",
        action="append",
        type=parse_option,
        metavar="KEY=VALUE",
        help="a trainer option, e.g. -o beta=4 (vae), -o n_blocks=9 (cyclegan); see docs/training.md",
    )
    adv = p.add_argument_group(
        "adversarial training (classifier)",
        "Train on adversarial examples made each step against the current model (in eval mode); these flags "
        "set the classifier options of the same names (-o eps=0.2 works too).",
    )
    adv.add_argument(
        "--adversarial",
        choices=TRAINING_ATTACKS,
        help="the attack that makes the training examples (default: none, standard training)",
    )
    adv.add_argument(
        "--defense",
        choices=DEFENSES,
        help="the loss: at = CE(x) + lambda CE(x_adv) (default), madry = lambda CE(x_adv), alp = CE(x) + "
        "lambda ||f(x) - f(x_adv)||^2 (logit pairing), alp_mixed = the paper's mixed-batch ALP, "
        "trades = CE(x) + lambda KL(p(x) || p(x_adv))",
    )
    adv.add_argument(
        "--eps",
        type=float,
        help="Linf radius in [0, 1] pixels (default 0.2: Madry et al.'s MNIST "
        "0.3 stalls LeNet on the bundled digits, with --eps-warmup too)",
    )
    adv.add_argument("--adv-steps", type=int, help="PGD steps per training example (default 10)")
    adv.add_argument("--adv-alpha", type=float, help="PGD step size (default 2.5 * eps / steps)")
    adv.add_argument("--adv-lambda", type=float, help="weight of the adversarial term (default 1; trades: 6)")
    adv.add_argument(
        "--eps-warmup",
        type=float,
        help="epochs over which the training eps and step grow linearly from 0 (default 0: none)",
    )
    p.set_defaults(func=train)
    p = commands.add_parser("sample", help="a PNG grid of samples or translations from a checkpoint")
    p.add_argument("--ckpt", required=True, help="a checkpoint written by `deepfast train` (OUT/last.pt)")
    p.add_argument("--n", type=int, default=64, help="images (VAE, DCGAN) or held-out inputs to draw")
    p.add_argument("--out", help="PNG file (default: samples.png beside the checkpoint)")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent codes")
    p.add_argument("--device", help="cpu or cuda (default cpu)")
    add_trust_flag(p, "load --ckpt")
    p.set_defaults(func=sample)
