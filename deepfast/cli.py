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
    out = Path(given.get("out") or f"runs/{args.model}")
    if args.resume:
        saved = load_checkpoint(out / "last.pt")["config"]
        if saved["model"] != args.model:
            raise ValueError(f"{out / 'last.pt'} is a {saved['model']} run, not {args.model}")
        config = TrainConfig.from_dict({**saved, **given, "options": {**saved["options"], **given["options"]}})
    else:
        config = TrainConfig(model=args.model, **given)
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


# TrainConfig fields that `deepfast train` options set (the option name with - for _).
TRAIN_FIELDS = ("data", "epochs", "batch_size", "lr", "out", "seed", "device", "amp", "channels_last", "compile",
                "backend", "impl", "sync_bn", "image_size", "max_batches", "sample_every", "samples", "progress")


def add_train_parser(commands) -> None:
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
    return parser


COMMANDS = {"info": info, "train": train, "sample": sample, "demo": demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (backends.BackendUnavailable, ValueError, FileNotFoundError) as exc:
        print(f"deepfast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
