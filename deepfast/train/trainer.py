"""The training loop every trainer shares: AMP, channels_last, torch.compile, progress bar, metrics,
sample grids, the run folder, Ctrl-C and divergence. The run's checkpoint and exact resume are
deepfast.train.run_checkpoint's; processes, devices and DDP deepfast.train.distributed's."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

import deepfast
from deepfast import progress
from deepfast._inference import evaluating
from deepfast.amp import autocast
from deepfast.files import remove_temp_files
from deepfast.grid import save_grid
from deepfast.nn import convert_sync_batchnorm
from deepfast.train.config import NoOptions, TrainConfig, options_from_dict
from deepfast.train.data import ShardSampler, load_split, make_loader, to_device
from deepfast.train.distributed import World, all_sum, close_world, data_parallel, init_process
from deepfast.train.lock import RunFolderError, run_lock
from deepfast.train.records import MetricsLog
from deepfast.train.run_checkpoint import CHECKPOINT, resume_run, save_run

# What a run writes into its folder (deleted before a new run), and the files that mean it holds one.
RUN_FILES = (CHECKPOINT, "metrics.jsonl", "metrics.csv", "config.json", "samples/epoch_*.png")
HOLDS_A_RUN = (CHECKPOINT, "metrics.jsonl")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class RunResult:
    """What ``Trainer.fit`` did: epochs completed, whether it stopped early (Ctrl-C), the checkpoint, the
    metrics rows (rank 0; empty on the other processes) and whether this process is rank 0."""

    epochs_done: int
    stopped: bool
    checkpoint: Path | None
    metrics: list[dict]
    main: bool = True


class Trainer:
    """Base of the trainers. A subclass sets ``name``, ``defaults`` (values for the TrainConfig fields
    left None), ``Options`` (a dataclass of its own settings, filled from TrainConfig.options and kept as
    ``self.options``) and ``value_range``, and implements

        build(channels)        models (self.add_model), optimizers, schedulers (stepped every epoch)
        train_step(batch)      one step on a batch (tensors on the device); returns {name: 0-dim loss}
        samples()              optional images in value_range for the epoch's PNG grid: (N, C, H, W)
                               (a square grid) or a list of such batches of one size (one row each)
        evaluate()             optional {metric: float} on the held-out split ``self.held_out``
        end_epoch()            optional work after an epoch's steps (before evaluate, samples, checkpoint)

    ``fit(resume)`` runs the epochs. Under torchrun every process runs it (DDP, a shard of each batch).
    During ``train_step``, ``self.epoch`` and ``self.batch`` (0-based) locate the step and
    ``self.batches_per_epoch`` is the epoch's length, so a schedule of them resumes exactly.
    """

    name: ClassVar[str]
    defaults: ClassVar[dict]
    Options: ClassVar[type] = NoOptions
    value_range: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def __init__(self, config: TrainConfig) -> None:
        config.check()
        self.options = options_from_dict(self.Options, config.options, self.name)
        defaults = self.defaults
        resolved = {k: (defaults[k] if v is None and k in defaults else v) for k, v in config.to_dict().items()}
        resolved.update(
            model=self.name, options=dataclasses.asdict(self.options), out=resolved["out"] or f"runs/{self.name}"
        )
        self.config = TrainConfig.from_dict(resolved)
        self.config.check()
        self.out = Path(self.config.out)
        self.models: dict[str, nn.Module] = {}
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.world = World()
        self.device = torch.device("cpu")
        self.epoch, self.batch, self.batches_per_epoch = 0, 0, 1
        self.held_out: torch.utils.data.Dataset | None = None
        self.train_data: torch.utils.data.Dataset | None = None
        self._stop = False

    # ----------------------------------------------------------------- for the subclasses
    def build(self, channels: int) -> None:
        raise NotImplementedError

    def train_step(self, batch: object) -> dict[str, Tensor]:
        raise NotImplementedError

    def samples(self) -> Tensor | list[Tensor] | None:
        return None

    def evaluate(self) -> dict[str, float]:
        return {}

    def end_epoch(self) -> None:
        """Optional work after an epoch's last step, before its evaluation, samples and checkpoint."""

    def held_out_batches(self, batch_size: int = 256) -> Iterator[object]:
        """Batches of the held-out split (rank 0; none without one), on the device."""
        if self.held_out is None:
            return
        for batch in torch.utils.data.DataLoader(self.held_out, batch_size=batch_size):
            yield to_device(batch, self.device, self.config.channels_last)

    def rank_state(self) -> dict:
        """State that differs between processes (image pools), saved for each process."""
        return {}

    def load_rank_state(self, state: dict) -> None:
        pass

    def setup(self, channels: int) -> None:
        """Seeds, then builds the models, optimizers and AMP scaler for images of ``channels`` on ``self.device``."""
        self.channels = channels
        seed_everything(self.config.seed)
        self.build(channels)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.config.amp == "fp16")

    def add_model(self, key: str, model: nn.Module) -> nn.Module:
        """Registers ``model``: on the device, SyncBatchNorm (sync_bn), channels_last, then wrapped in DDP
        (several processes) and torch.compile (compile). Returns the raw model; ``self.nets[key]`` is the
        wrapped one that training steps call (``self.models[key]`` is saved and sampled)."""
        model = model.to(self.device)
        if self.config.sync_bn:
            model = convert_sync_batchnorm(model)
        if self.config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        net = data_parallel(model, self.world, self.device)
        if self.config.compile:
            net = torch.compile(net)
        self.models[key], self.nets[key] = model, net
        return model

    def adam(self, *models: nn.Module, lr: float | None = None, betas: tuple[float, float] = (0.9, 0.999)):
        """Adam over the parameters of ``models`` at the run's learning rate."""
        params = [p for m in models for p in m.parameters()]
        return torch.optim.Adam(params, lr=lr or self.config.lr, betas=betas)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision (--amp bf16/fp16) around forward passes and losses."""
        return autocast(self.device.type, self.config.amp)

    def backward(self, loss: Tensor, *optimizers: torch.optim.Optimizer) -> None:
        """loss.backward() (scaled under fp16) and a step of each optimizer, which are zeroed first."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for opt in optimizers:
            self.scaler.step(opt)

    def frozen_net(self, key: str) -> nn.Module:
        """What to call for a forward through frozen parameters (the discriminator in a generator step):
        ``nets[key]``, except under DDP, whose reducer would wait for their gradients: the raw model there."""
        return self.models[key] if self.world.distributed else self.nets[key]

    @contextlib.contextmanager
    def frozen(self, *models: nn.Module) -> Iterator[None]:
        """Parameters of ``models`` do not require grad inside (a discriminator during the generator step)."""
        params = [p for m in models for p in m.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in params:
                p.requires_grad_(True)

    # ``with self.evaluating(*models):`` models in eval mode (each submodule's flag restored) without grad
    evaluating = staticmethod(evaluating)

    def num_samples(self, default: int) -> int:
        """Images in a sample grid: config.samples, else ``default``."""
        return self.config.samples or default

    def fixed_noise(self, *shape: int) -> Tensor:
        """Normal noise from a generator of its own (the same every epoch, nothing taken from the global RNG)."""
        g = torch.Generator().manual_seed(self.config.seed)
        return torch.randn(*shape, generator=g).to(self.device)

    # ----------------------------------------------------------------- the loop
    def fit(self, resume: bool = False, overwrite: bool = False, trusted: bool = False) -> RunResult:
        """Trains ``config.epochs`` epochs (from the checkpoint in ``out`` with resume=True). Writes
        out/last.pt every epoch and on Ctrl-C, out/metrics.{csv,jsonl}, out/samples/epoch_NNN.png.
        Raises TrainingDiverged on a NaN/inf loss (last.pt stays the last good one).

        The folder is locked meanwhile (``deepfast.train.lock``: a second training into it is refused);
        a new run (resume=False) into a folder that holds one is refused unless ``overwrite``, which
        deletes the old run's files first. ``trusted``: resume from a checkpoint that needs the full
        unpickler (``load_checkpoint``)."""
        cfg = self.config
        self.world, self.device = init_process(cfg.device)
        try:
            with deepfast.use_backend(cfg.backend) if cfg.backend else contextlib.nullcontext(), self._locked():
                return self._fit(resume, overwrite, trusted)
        finally:
            close_world(self.world)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The run folder's lock, held by rank 0 (every process raises when it cannot be had)."""
        error: RunFolderError | None = None
        with contextlib.ExitStack() as stack:
            if self.world.main:
                try:
                    stack.enter_context(run_lock(self.out))
                except RunFolderError as err:
                    error = err
            failed = all_sum(torch.tensor([float(error is not None)], device=self.device), self.world)
            if failed[0] > 0:
                raise error or RunFolderError(f"run folder {self.out} is in use by another training")
            yield

    def _prepare_folder(self, resume: bool, overwrite: bool) -> None:
        """Rank 0, holding the lock: removes the temporary files a killed save left, and refuses (or with
        ``overwrite`` deletes) an old run in the folder when starting a new one."""
        if not self.world.main:
            return
        remove_temp_files(self.out, CHECKPOINT)
        remove_temp_files(self.out / "samples", "*.png")
        if resume:
            return
        held = [name for name in HOLDS_A_RUN if (self.out / name).exists()]
        if held and not overwrite:
            raise RunFolderError(
                f"run folder {self.out} holds a run already ({', '.join(held)}): continue it with "
                "--resume, replace it with --overwrite, or choose another --out"
            )
        for p in sorted({p for pattern in RUN_FILES for p in self.out.glob(pattern)}):
            p.unlink()

    def _fit(self, resume: bool, overwrite: bool, trusted: bool) -> RunResult:
        cfg, world = self.config, self.world
        if cfg.batch_size % world.size:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world.size} processes")
        self.train_data = train_data = load_split(cfg.data, True, self.value_range, cfg.image_size)
        if world.main:
            self.held_out = load_split(cfg.data, False, self.value_range, cfg.image_size)
        self.setup(self._check_data(train_data))  # the same initial weights in every process
        sampler = ShardSampler(len(train_data), world, cfg.seed, cfg.batch_size // world.size)
        if sampler.batches() == 0:
            raise ValueError(f"data {cfg.data!r} has {len(train_data)} items, fewer than batch_size {cfg.batch_size}")
        loader = make_loader(train_data, sampler)
        n_batches = self.batches_per_epoch = min(sampler.batches(), cfg.max_batches or sampler.batches())
        self._prepare_folder(resume, overwrite)  # after the settings and the data proved good, before any write
        log = MetricsLog(self.out) if world.main else None
        start_epoch, skip, sums = 0, 0, {}
        if resume:
            start_epoch, skip, sums = resume_run(self, log, trusted)
            if start_epoch == cfg.epochs and skip == 0:
                if world.main:  # said even without progress: the command did nothing
                    progress.write(
                        f"{self.out / CHECKPOINT} has trained all {cfg.epochs} epochs already: nothing to do "
                        "(give --epochs with a larger total to train more)"
                    )
                return RunResult(cfg.epochs, False, self.out / CHECKPOINT, log.rows if log else [], world.main)
        else:
            seed_everything(cfg.seed + world.rank)  # noise differs between processes
            if log is not None:
                log.truncate(0)
        if world.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        stopped = False
        with self._sigint_stops():
            for epoch in range(start_epoch, cfg.epochs):
                self.epoch = epoch
                sampler.start(epoch, skip)
                stopped, sums = self._run_epoch(loader, epoch, skip, n_batches, sums)
                if stopped:
                    break
                self._end_epoch(epoch, sums, log)
                skip, sums = 0, {}
        done = self.epoch if stopped else cfg.epochs
        return RunResult(done, stopped, self.out / CHECKPOINT, log.rows if log else [], world.main)

    def _check_data(self, data: torch.utils.data.Dataset) -> int:
        """Channels of the images, after checking that they are (C, S, S) with S = image_size."""
        item = data[0]
        image = item[0] if isinstance(item, (tuple, list)) else item
        size = self.config.image_size
        if size is not None and tuple(image.shape[-2:]) != (size, size):
            raise ValueError(
                f"data {self.config.data!r} gives {tuple(image.shape[-2:])} images but image_size is "
                f"{size}; pass --image-size {image.shape[-1]} or data of that size"
            )
        return image.shape[0]

    def _run_epoch(self, loader, epoch: int, skip: int, n_batches: int, sums: dict) -> tuple[bool, dict]:
        cfg, world = self.config, self.world
        for model in self.models.values():
            model.train()
        bar = progress.bar(
            total=n_batches,
            initial=skip,
            desc=f"{self.name} {epoch + 1}/{cfg.epochs}",
            unit="batch",
            disable=not (cfg.progress and world.main),
            dynamic_ncols=True,
            leave=True,
        )
        batches = iter(loader)
        for k in range(skip, n_batches):
            batch = to_device(next(batches), self.device, cfg.channels_last)
            self.batch = k
            losses = self.train_step(batch)
            self.scaler.update()
            values = torch.stack([v.detach().float() for v in losses.values()])
            flags = torch.tensor([float(self._stop), float(not torch.isfinite(values).all())], device=self.device)
            all_sum(flags, world)
            if flags[1] > 0:
                bar.close()
                self._diverged(epoch, k, dict(zip(losses, values.tolist())))
            for name, value in zip(losses, values.tolist()):
                sums[name] = sums.get(name, 0.0) + value
            sums["_batches"] = sums.get("_batches", 0) + 1
            bar.update()
            bar.set_postfix({n: f"{sums[n] / sums['_batches']:.4g}" for n in losses}, refresh=False)
            if flags[0] > 0:
                bar.close()
                save_run(self, epoch, k + 1, sums)
                if world.main:
                    progress.write(
                        f"stopped at epoch {epoch + 1}, batch {k + 1}; checkpoint {self.out / CHECKPOINT}; "
                        "continue with --resume"
                    )
                return True, sums
        bar.close()
        return False, sums

    def _end_epoch(self, epoch: int, sums: dict, log: MetricsLog | None) -> None:
        cfg, world = self.config, self.world
        totals = torch.tensor(list(sums.values()), dtype=torch.float64)
        totals = all_sum(totals.to(self.device), world).cpu().tolist()
        n = totals[-1] if sums else 1
        row: dict = {"epoch": epoch + 1}
        row.update({name: total / n for name, total in zip(sums, totals) if name != "_batches"})
        for sched in self.schedulers.values():
            sched.step()
        self.end_epoch()
        if world.main:
            if self.held_out is not None:
                row.update(self.evaluate())
            row["lr"] = next(iter(self.optimizers.values())).param_groups[0]["lr"]
            row["time"] = time.time()
            log.append(row)
            if cfg.sample_every and (epoch + 1) % cfg.sample_every == 0:
                self.save_samples(self.out / "samples" / f"epoch_{epoch + 1:03d}.png")
            if cfg.progress:
                progress.write(
                    f"epoch {epoch + 1}: "
                    + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "time"))
                )
        save_run(self, epoch + 1, 0, {})

    def save_samples(self, path: Path) -> Path | None:
        """Writes ``samples()`` as a PNG grid to ``path`` (nothing when the trainer has none)."""
        images = self.samples()
        if images is None:
            return None
        nrow = None
        if isinstance(images, list):  # rows of up to 8 items, one row per kind, repeated
            n = images[0].shape[0]
            nrow = min(n, 8)
            images = torch.cat([kind[i : i + 8] for i in range(0, n, 8) for kind in images])
        scale = max(1, 64 // images.shape[-1])
        return save_grid(images, path, nrow=nrow, value_range=self.value_range, scale=scale)

    def _diverged(self, epoch: int, batch: int, losses: dict) -> None:
        path = self.out / CHECKPOINT
        kept = f"the last good checkpoint is {path}" if path.exists() else "no checkpoint was written yet"
        bad = ", ".join(f"{k}={v}" for k, v in losses.items())
        raise TrainingDiverged(
            f"{self.name} diverged at epoch {epoch + 1}, batch {batch + 1} ({bad}); {kept}. "
            "Try a lower --lr, or --amp bf16 instead of fp16."
        )

    @contextlib.contextmanager
    def _sigint_stops(self) -> Iterator[None]:
        """The first Ctrl-C asks the loop to stop after the current step (and save); a second one aborts."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop:
                raise KeyboardInterrupt
            self._stop = True
            if self.world.main:
                progress.write("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to abort)")

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
            self._stop = False


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
