"""Training runs of the demo: reused when finished, resumed when interrupted, trained otherwise."""

from __future__ import annotations

from pathlib import Path

from deepfast.train import TrainConfig, Trainer, load_checkpoint, load_trainer, make_trainer
from deepfast.train.checkpoint import CheckpointError
from deepfast.train.run_checkpoint import RESUME_KEYS


def trained(out: Path, progress: bool = True, device: str | None = None, **fields) -> Trainer:
    """The trainer of run folder ``out`` with ``fields`` (TrainConfig fields), its models in eval mode:
    loaded when out/last.pt holds the finished run with the same settings, resumed when it holds an
    unfinished one, else trained from scratch (replacing what the folder held). A checkpoint that does
    not load safely (damaged, or an older deepfast's) is trained again, never unpickled."""
    config = TrainConfig(out=str(out), progress=progress, device=device, **fields)
    wanted = make_trainer(config).config
    path = Path(out) / "last.pt"
    resume = False
    if path.exists():
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as err:
            print(f"{err}\ntraining {out} again")
        else:
            same = all(
                ckpt["config"].get(k) == getattr(wanted, k) for k in (*RESUME_KEYS, "impl", "epochs", "max_batches")
            )
            if same and ckpt["epoch"] == wanted.epochs and ckpt["batch"] == 0:
                return load_trainer(str(path), device=device)
            resume = same
    trainer = make_trainer(config)
    trainer.fit(resume=resume, overwrite=not resume)
    for model in trainer.models.values():
        model.eval()
    return trainer
