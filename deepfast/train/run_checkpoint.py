"""The checkpoint of a training run, out/last.pt: what ``Trainer.fit`` writes after every epoch and on
Ctrl-C (``save_run``), and how ``--resume`` puts a trainer back where it stopped (``resume_run``). The
file format, its safe loading and the RNG states are those of deepfast.train.checkpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from deepfast import progress
from deepfast.train.checkpoint import FORMAT, atomic_save, load_checkpoint, load_state, rng_state, set_rng_state
from deepfast.train.distributed import barrier, gather_objects
from deepfast.train.records import MetricsLog

if TYPE_CHECKING:
    from deepfast.train.trainer import Trainer

CHECKPOINT = "last.pt"
# Settings that must match between a checkpoint and the run resuming it (a run with another learning
# rate is another run: its optimizer and schedule states were built for the saved one).
RESUME_KEYS = ("model", "data", "batch_size", "lr", "seed", "image_size", "options")


def save_run(trainer: Trainer, epoch: int, batch: int, sums: dict) -> None:
    """Writes ``trainer``'s checkpoint: the state after ``batch`` batches of epoch ``epoch`` (0-based; batch
    0 = its start). Every process sends its RNG and rank state; rank 0 writes."""
    ranks = gather_objects({"rng": rng_state(), **trainer.rank_state()}, trainer.world)
    if trainer.world.main:
        atomic_save(
            {
                "format": FORMAT,
                "trainer": trainer.name,
                "config": trainer.config.to_dict(),
                "channels": trainer.channels,
                "epoch": epoch,
                "batch": batch,
                "sums": sums,
                "models": {k: m.state_dict() for k, m in trainer.models.items()},
                "optimizers": {k: o.state_dict() for k, o in trainer.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in trainer.schedulers.items()},
                "scaler": trainer.scaler.state_dict(),
                "ranks": ranks,
                "world_size": trainer.world.size,
            },
            trainer.out / CHECKPOINT,
        )
    barrier(trainer.world)


def resume_run(trainer: Trainer, log: MetricsLog | None, trusted: bool) -> tuple[int, int, dict]:
    """Loads ``trainer``'s checkpoint into its models, optimizers, schedulers, AMP scaler, RNGs and rank
    state, after checking that it is a checkpoint of the same run; truncates the metrics ``log`` to the
    epochs it holds. Returns (epoch, batch, sums): where the run goes on, and the sums of the unfinished
    epoch."""
    path = trainer.out / CHECKPOINT
    ckpt = load_checkpoint(path, map_location=trainer.device, trusted=trusted)
    saved = ckpt["config"]
    mismatch = [
        f"{k}: {saved.get(k)!r} there, {getattr(trainer.config, k)!r} here"
        for k in RESUME_KEYS
        if saved.get(k) != getattr(trainer.config, k)
    ]
    if mismatch:
        raise ValueError(
            f"cannot resume from {path}: settings differ ({'; '.join(mismatch)}); these are fixed "
            "for a run: start a new one (another --out, or --overwrite) to change them"
        )
    begun = ckpt["epoch"] + (ckpt["batch"] > 0)  # epochs trained, the unfinished one counted
    if trainer.config.epochs < begun:
        partial = f" and {ckpt['batch']} batches of epoch {begun}" if ckpt["batch"] else ""
        raise ValueError(
            f"cannot resume from {path} with epochs={trainer.config.epochs}: the run has trained "
            f"{ckpt['epoch']} epochs{partial} already; give --epochs {begun} or more"
        )
    for kind, objects in (
        ("models", trainer.models),
        ("optimizers", trainer.optimizers),
        ("schedulers", trainer.schedulers),
    ):
        for k, obj in objects.items():
            load_state(obj, ckpt[kind].get(k), f"{kind[:-1]} {k!r}", path)
    load_state(trainer.scaler, ckpt["scaler"], "the AMP scaler", path)
    if ckpt["world_size"] == trainer.world.size:
        state = ckpt["ranks"][trainer.world.rank]
    else:  # another process count: the run continues, not bit for bit
        state = ckpt["ranks"][0]
        state["rng"]["torch"] = torch.Generator().manual_seed(trainer.config.seed + trainer.world.rank).get_state()
    set_rng_state(state["rng"])
    trainer.load_rank_state(state)
    if log is not None:
        log.truncate(ckpt["epoch"])
    if trainer.world.main and trainer.config.progress:
        progress.write(f"resuming {path} at epoch {ckpt['epoch'] + 1}, batch {ckpt['batch']}")
    return ckpt["epoch"], ckpt["batch"], ckpt["sums"]
