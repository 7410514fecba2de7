"""Training: a trainer per model (ae, unet, vae, dcgan, cyclegan, classifier) sharing one loop with
mixed precision, channels_last, torch.compile, DDP under torchrun, metrics, PNG grids, atomic
checkpoints and exact resume. ``deepfast train MODEL ...`` on the command line."""

from deepfast.train.checkpoint import atomic_save, load_checkpoint
from deepfast.train.config import TrainConfig
from deepfast.train.registry import TRAINERS, load_trainer, make_trainer, train
from deepfast.train.trainer import RunResult, Trainer, TrainingDiverged

__all__ = [
    "TRAINERS",
    "RunResult",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "atomic_save",
    "load_checkpoint",
    "load_trainer",
    "make_trainer",
    "train",
]
