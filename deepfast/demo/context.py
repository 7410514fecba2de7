"""What the demo's sections share: the output folder, quick or full settings, the judge classifier, the
runs trained so far (their training curves go into the report) and the results with their targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from deepfast.demo.runs import trained
from deepfast.grid import save_grid
from deepfast.train import Trainer


def export(images: Tensor, labels: Tensor | None, folder: Path) -> None:
    """Images (N, C, H, W) in [0, 1], C = 1 or 3, as PNG files: folder/LABEL/NNNN.png (folder/NNNN.png
    without labels), for the trainers' folder:PATH and unpaired:PATH data."""
    for i, x in enumerate(images):
        sub = folder / str(int(labels[i])) if labels is not None else folder
        sub.mkdir(parents=True, exist_ok=True)
        array = (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(np.ascontiguousarray(array[..., 0] if array.shape[-1] == 1 else array)).save(
            sub / f"{i:04d}.png"
        )


def stack(data, n: int | None = None) -> tuple[Tensor, Tensor]:
    """The first n (all) items (x, y) of a labelled dataset as (images (n, C, H, W), labels (n,))."""
    n = len(data) if n is None else min(n, len(data))
    return torch.stack([data[i][0] for i in range(n)]), torch.stack([data[i][1] for i in range(n)])


@dataclass
class Target:
    """A number of the report with the target it is held to: ``value`` >= ``target`` (``at_least``) or
    <= ``target``; ``met`` says whether it is."""

    value: float
    target: float
    at_least: bool = True

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.at_least else self.value <= self.target

    def to_dict(self) -> dict:
        return {"value": self.value, "target": f"{'>=' if self.at_least else '<='} {self.target:g}", "met": self.met}


@dataclass
class Demo:
    """out/report.html, out/results.json, out/images/*.png, out/runs/NAME/ (training runs). ``full`` selects
    the longer settings, ``smoke`` the shortest that run every line (1 epoch of 2 batches; for tests);
    ``judge`` is the digits classifier the first section trains, which the others use. ``results`` holds
    every number of the report by section; ``targets`` the ones held to a target; ``runs`` the names of
    the training runs not yet shown with their curves."""

    out: Path
    full: bool = False
    smoke: bool = False
    device: str | None = None
    progress: bool = True
    judge: nn.Module | None = None
    results: dict = field(default_factory=dict)
    targets: dict[str, Target] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)

    def pick(self, quick, full):
        """The quick or the full value of a setting."""
        return full if self.full else quick

    def epochs(self, quick: int, full: int) -> int:
        return 1 if self.smoke else self.pick(quick, full)

    def train(self, name: str, **fields) -> Trainer:
        """The finished training run out/runs/NAME (see deepfast.demo.runs.trained)."""
        if self.smoke:
            fields["max_batches"] = 2
        self.runs.append(name)
        return trained(self.out / "runs" / name, progress=self.progress, device=self.device, **fields)

    def target(self, name: str, value: float, target: float, at_least: bool = True) -> Target:
        """Records ``value`` under ``name`` with its target (see Target) and returns it."""
        self.targets[name] = Target(float(value), float(target), at_least)
        return self.targets[name]

    def save(self, name: str, images: Tensor, **grid) -> str:
        """Writes images (N, C, H, W) as out/images/NAME.png (deepfast.grid.save_grid options); returns
        the path relative to the report."""
        save_grid(images, self.out / "images" / f"{name}.png", **grid)
        return f"images/{name}.png"
