"""`deepfast attack` and `deepfast detect`: robustness of a classifier checkpoint, or of a model of the
user's own (``--model package.module:factory`` with ``--weights``, ``--normalization``, ``--data``);
`deepfast attack` under torchrun shares the images out to the processes (``deepfast.attacks.evaluate``)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

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
    """An argparse type: "pgd,square" -> names of deepfast.attacks.ATTACKS or PRESETS ("autoattack")."""
    from deepfast.attacks.registry import ATTACKS, PRESETS, known

    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in ATTACKS and n not in PRESETS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown attack {', '.join(map(repr, unknown)) or repr(text)}; known: {known()}"
        )
    return names


def adaptive_losses(text: str) -> list[str]:
    """An argparse type: "softplus,logit" -> names of deepfast.defenses.detection.ADAPTIVE_LOSSES."""
    from deepfast.defenses.detection import ADAPTIVE_LOSSES

    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names or any(n not in ADAPTIVE_LOSSES for n in names):
        raise argparse.ArgumentTypeError(f"takes {', '.join(ADAPTIVE_LOSSES)} (comma-separated), got {text!r}")
    return names


@dataclass
class Subject:
    """The classifier under attack and the data it takes: from --ckpt, or --model (with --weights,
    --normalization applied by a forward pre-hook, so that the model takes images in [0, 1])."""

    model: nn.Module
    source: str  # what the printout names: the checkpoint or the factory
    data: str  # the dataset name (deepfast.data), e.g. "digits" or "folder:PATH"
    value_range: tuple[float, float]
    image_size: int | None


def device_of(args: argparse.Namespace) -> torch.device:
    """--device (default cpu); "cuda" under torchrun is this process's GPU (LOCAL_RANK)."""
    device = torch.device(args.device or "cpu")
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def user_model(spec: str) -> nn.Module:
    """The nn.Module that ``factory()`` of "package.module:factory" returns; errors name --model."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--model takes package.module:factory (a callable returning an nn.Module), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"--model {spec}: cannot import {module_name}: {err}") from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"--model {spec}: {module_name} has no callable {attr!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {spec}: {attr}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_weights(model: nn.Module, path: str) -> None:
    """Loads the state_dict in file ``path`` into ``model`` (torch.load(weights_only=True): tensors and
    plain containers only, no code runs); errors name --weights."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 (unpickling refused, a corrupt file: each is the file's fault)
        raise ValueError(f"--weights {path}: not a state_dict that loads without running code ({err})") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"--weights {path}: expected a state_dict (a dict of tensors, model.state_dict()), "
            f"got {type(state).__name__}"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"--weights {path} does not fit --model: {err}") from err


def normalization(text: str) -> tuple[list[float], list[float]]:
    """An argparse type: "MEAN,STD" (one value each) or "M1,...,Mc,S1,...,Sc" (per channel) -> (means, stds)."""
    values = number_list("--normalization")(text)
    if len(values) % 2 or any(v <= 0 for v in values[len(values) // 2 :]):
        raise argparse.ArgumentTypeError(
            f"--normalization takes MEAN,STD (or C means then C stds), stds > 0, got {text!r}"
        )
    return values[: len(values) // 2], values[len(values) // 2 :]


def load_subject(args: argparse.Namespace) -> Subject:
    """The classifier of --ckpt (a trainer checkpoint of `deepfast train classifier`) or of --model."""
    device = device_of(args)
    if args.ckpt is not None:
        for flag, value in (
            ("--weights", args.weights),
            ("--normalization", args.normalization),
            ("--image-size", args.image_size),
        ):
            if value is not None:
                raise ValueError(f"{flag} applies to --model (a checkpoint carries its own)")
        from deepfast.train import load_trainer

        trainer = load_trainer(args.ckpt, device=str(device), trusted=args.trust_checkpoint)
        if trainer.name != "classifier":
            raise ValueError(
                f"--ckpt: {args.ckpt} is a {trainer.name} checkpoint, not a classifier "
                "(train one with `deepfast train classifier`)"
            )
        return Subject(
            trainer.model, args.ckpt, args.data or trainer.config.data, trainer.value_range, trainer.config.image_size
        )
    if args.data is None:
        raise ValueError(
            "--data: --model needs the images to attack, e.g. --data folder:PATH (one subfolder per class)"
        )
    model = user_model(args.model)
    if args.weights is not None:
        load_weights(model, args.weights)
    model.to(device).eval()
    if args.normalization is not None:
        mean, std = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in args.normalization)
        model.register_forward_pre_hook(
            lambda module, inputs: ((inputs[0] - mean.to(inputs[0])) / std.to(inputs[0]), *inputs[1:])
        )
    return Subject(model, args.model, args.data, (0.0, 1.0), args.image_size)


def _unsplit(name: str) -> bool:
    """True for a dataset without train / held-out splits (a folder)."""
    from deepfast.data import dataset_function

    params = inspect.signature(dataset_function(name)[0]).parameters
    return "train" not in params and "split" not in params


def labelled_images(
    args: argparse.Namespace, subject: Subject, split: str, n: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (n, C, H, W), labels (n,)): the first ``n`` (None: all) items of ``split`` ("val" or "train")
    of the subject's data. A dataset without splits (``folder:PATH``) is split here: its items in an
    order drawn from a generator seeded with 0, the first half "train", the rest "val"."""
    from deepfast.train.data import load_split

    name = subject.data
    if n is not None and n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    data = load_split(name, split == "train" or _unsplit(name), subject.value_range, subject.image_size)
    if data is None:
        raise ValueError(f"--data: {name!r} has no {split} split")
    order = list(range(len(data)))
    if _unsplit(name) and args.command == "detect":
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
        order = order[: len(order) // 2] if split == "train" else order[len(order) // 2 :]
    if not order:
        raise ValueError(f"--data: {name!r} has no images for the {split} split")
    items = [data[i] for i in order[: len(order) if n is None else n]]
    if not isinstance(items[0], (tuple, list)):
        raise ValueError(f"--data: {name!r} has no labels (for a folder: one subfolder of images per class)")
    images, labels = torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])
    check_fit(subject, images, labels, getattr(data, "classes", None))
    return images, labels


def check_fit(subject: Subject, images: torch.Tensor, labels: torch.Tensor, classes: list[str] | None) -> None:
    """The model must take the images and give at least as many logits as the data has classes."""
    device = next((t.device for t in (*subject.model.parameters(), *subject.model.buffers())), torch.device("cpu"))
    try:
        with torch.no_grad():
            out = subject.model(images[:1].to(device))
    except RuntimeError as err:
        raise ValueError(
            f"{subject.source} cannot take the images of --data {subject.data} (shape {tuple(images.shape[1:])}): {err}"
        ) from err
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{subject.source} must return logits of shape (N, num_classes), got {got}")
    k, top = out.shape[1], int(labels.max())
    if top >= k:
        count = f"{len(classes)} classes" if classes is not None else f"labels up to {top}"
        raise ValueError(
            f"the outputs of {subject.source} do not fit the labels of --data {subject.data}: the model "
            f"gives {k} logits per image, the data has {count} (labels must be < {k})"
        )


def attack_factories(names: list[str], args: argparse.Namespace) -> list:
    """The attacks ``names`` (presets expanded) with the settings given on the command line (--steps,
    --alpha, --norm, each passed to the attacks that take it; one that none of them takes is an error
    naming the flag), --seed and --amp (every attack takes them)."""
    from deepfast.attacks.registry import factories

    settings = {"steps": args.steps, "alpha": args.alpha, "norm": args.norm, "seed": args.seed, "amp": args.amp}
    return factories(names, settings, flag=lambda key: f"--{key}")


def attack(args: argparse.Namespace) -> int:
    """Robust accuracy of a classifier against attacks at several eps, and a PNG of examples. Under
    torchrun the images are shared out to the processes; rank 0 prints the table and writes the PNG."""
    from deepfast.attacks import evaluate
    from deepfast.train.distributed import close_world, init_world

    for e in args.eps:
        if not e >= 0 or e == float("inf"):
            raise ValueError(f"--eps values must be finite and >= 0, got {e}")
    for flag, value in (("--show", args.show), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    factories = attack_factories(args.attack, args)
    device = device_of(args)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    world = init_world(device.type)
    try:
        subject = load_subject(args)
        images, labels = labelled_images(args, subject, args.split, args.n)
        result = evaluate(
            subject.model,
            (images, labels),
            factories,
            args.eps,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=args.progress,
        )
        if world.main:
            processes = f", {world.size} processes" if world.distributed else ""
            print(f"{subject.source}: {', '.join(args.attack)} on {subject.data} ({args.split}{processes})")
            print(result.table())
            out = Path(args.out or (Path(args.ckpt).with_name("attack.png") if args.ckpt else "attack.png"))
            save_examples(subject.model, factories[0], images[: args.show], labels[: args.show], args.eps, out)
    finally:
        close_world(world)
    return 0


def save_examples(model: nn.Module, factory, x: torch.Tensor, y: torch.Tensor, eps: list[float], out: Path) -> None:
    """The PNG: originals, then per eps the examples of ``factory``'s attack and their perturbation, amplified."""
    from deepfast.grid import save_grid

    device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    with torch.no_grad():
        pred = model(x.to(device)).argmax(1).cpu()
    rows, texts, colors = [x], [f"y={int(t)} p={int(p)}" for t, p in zip(y, pred)], []
    colors += ["white" if p == t else "red" for t, p in zip(y, pred)]
    for e in eps:
        adv = factory(model, eps=e)(x, y)
        with torch.no_grad():
            pred = model(adv.to(device)).argmax(1).cpu()
        delta = adv - x
        scale = delta.abs().amax().item() or 1.0
        rows += [adv, 0.5 + delta / (2 * scale)]
        texts += [f"p={int(p)}" for p in pred] + [f"eps={e:g}" if i == 0 else "" for i in range(len(x))]
        colors += ["white" if p == t else "red" for t, p in zip(y, pred)] + ["white"] * len(x)
    save_grid(torch.cat(rows), out, nrow=len(x), scale=3, labels=texts, colors=colors)
    print(
        f"wrote {out}: rows original (y = label, p = prediction), then per eps: adversarial, perturbation "
        "(gray = 0, amplified to the largest change)"
    )


def detect(args: argparse.Namespace) -> int:
    """Train an adversarial-example detector on a classifier layer and report its ROC-AUCs."""
    from deepfast.defenses.detection import detection_report

    if not args.eps >= 0 or args.eps == float("inf"):
        raise ValueError(f"--eps must be finite and >= 0, got {args.eps}")
    subject = load_subject(args)
    test = labelled_images(args, subject, "val", args.n)
    train = labelled_images(args, subject, "train", args.n_train)
    report = detection_report(
        subject.model,
        args.layer,
        train,
        test,
        args.eps,
        steps=args.steps,
        c=args.c,
        detector_losses=args.adaptive_loss,
        hidden=args.hidden,
        seed=args.seed,
    )
    print(report.table())
    return 0


def add_parsers(commands) -> None:
    def common(p: argparse.ArgumentParser, n_help: str) -> None:
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument("--ckpt", help="a classifier checkpoint of `deepfast train classifier` (OUT/last.pt)")
        source.add_argument(
            "--model",
            metavar="PACKAGE.MODULE:FACTORY",
            help="a model of your own: FACTORY() returns an nn.Module giving logits (N, K) for "
            "images (N, C, H, W) in [0, 1] (see --normalization); needs --data",
        )
        p.add_argument(
            "--weights",
            metavar="FILE",
            help="with --model: a state_dict to load into it (torch.save("
            "model.state_dict()); loaded with weights_only=True, no code runs)",
        )
        p.add_argument(
            "--normalization",
            type=normalization,
            metavar="MEAN,STD",
            help="with --model: the model sees (x - MEAN) / STD; one value each, or C means then C stds",
        )
        p.add_argument("--image-size", type=int, help="with --model: resize the images of --data to this size")
        p.add_argument(
            "--data",
            help="dataset (default: the checkpoint's; e.g. digits, or folder:PATH with one "
            "subfolder of images per class, sorted names = class indices); its held-out "
            "split is attacked (a folder: all of it; detect: a seeded half for training)",
        )
        p.add_argument("--n", type=int, help=n_help)
        p.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts (default 0)")
        p.add_argument("--device", help="cpu or cuda (default cpu)")
        add_trust_flag(p, "load --ckpt")

    p = commands.add_parser(
        "attack",
        help="robust accuracy of a classifier checkpoint, and a PNG of adversarial examples",
        description="Attack a classifier checkpoint on held-out images at each eps (Linf, or L2 with --norm 2, "
        "in [0, 1] pixels): print clean and robust accuracy (worst case per image over the attacks, "
        "deepfast.attacks.evaluate) and write a PNG grid: the first --show images with their label y "
        "and prediction p, then for each eps the first attack's adversarial examples (wrong "
        "predictions in red) and their perturbations (gray = 0, amplified to the largest change). "
        "Example: deepfast attack --ckpt runs/classifier/last.pt --attack pgd --eps 0.05,0.1,0.2,0.3 --steps 40. "
        "--attack autoattack runs AutoAttack's standard ensemble (APGD-CE, APGD-T, FAB-T, Square; "
        "--norm 2 for L2). Under `torchrun --nproc_per_node=N -m deepfast attack ...` the images are "
        "shared out to the N processes and the table is that of one process.",
    )
    common(p, "attack the first N images (default: all)")
    p.set_defaults(func=attack)
    p.add_argument("--split", choices=["val", "train"], default="val", help="which split (default val)")
    p.add_argument(
        "--attack",
        type=attack_names,
        default=["pgd"],
        help="attack(s), comma-separated: fgsm, pgd, bim, mifgsm, apgd, apgd-dlr, apgd-t, fab, fab-t, eot, "
        "square, or autoattack (the four of AutoAttack's standard set) (default pgd)",
    )
    p.add_argument("--eps", type=number_list("--eps"), default=[0.3], help="budgets, comma-separated (default 0.3)")
    p.add_argument(
        "--steps",
        type=int,
        help="steps of the iterative attacks (their default: 10); --alpha and "
        "--norm too go to the attacks that take them",
    )
    p.add_argument("--alpha", type=float, help="step size (default: 2.5 * eps / steps for PGD)")
    p.add_argument("--norm", choices=["inf", "2"], help="Linf (default) or L2 ball")
    p.add_argument("--amp", choices=["bf16", "fp16"], help="run the model under autocast in this dtype")
    p.add_argument("--batch-size", type=int, default=256, help="images per attack batch (default 256)")
    p.add_argument("--show", type=int, default=8, help="images in the PNG (default 8)")
    p.add_argument("--out", help="PNG file (default: attack.png beside the checkpoint)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")

    p = commands.add_parser(
        "detect",
        help="train an adversarial-example detector on a classifier's activations; its ROC-AUCs",
        description="SafetyNet-style detection (deepfast.defenses.detection): record the activations of "
        "--layer (a forward hook), train a small MLP on clean training images against their FGSM and "
        "PGD examples at --eps, then report on held-out images the share of images each attack "
        "fools the classifier on, the detector's ROC-AUC (clean vs those fooling examples) and the "
        "share flagged, for FGSM, PGD and an adaptive PGD that also lowers the detector logit d "
        "(by c * softplus(d) or c * d).",
    )
    common(p, "held-out images to test on (default: all)")
    p.set_defaults(func=detect)
    p.add_argument("--n-train", type=int, help="training images for the detector (default: all)")
    p.add_argument(
        "--layer", default="classifier.3", help="layer name (default classifier.3: LeNet's penultimate ReLU)"
    )
    p.add_argument("--eps", type=float, default=0.3, help="Linf budget of the attacks (default 0.3)")
    p.add_argument("--steps", type=int, default=40, help="PGD steps (default 40)")
    p.add_argument(
        "--c",
        type=number_list("--c"),
        default=[1.0, 10.0],
        help="weights of the detector term of the adaptive attack, comma-separated (default 1,10)",
    )
    p.add_argument(
        "--adaptive-loss",
        type=adaptive_losses,
        default=["softplus", "logit"],
        help="the detector term h(d) of the adaptive attack, comma-separated: softplus (c * softplus(d), "
        "saturating), logit (c * d) (default both)",
    )
    p.add_argument("--hidden", type=int, default=64, help="hidden units of the detector MLP (0: logistic regression)")
