"""What the demo's sections share: the output folder, quick or full settings, the judge classifier."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from deepfast.demo.runs import trained
from deepfast.grid import save_grid
from deepfast.train import Trainer


@dataclass
class Demo:
    """out/report.html, out/images/*.png, out/runs/NAME/ (training runs). ``full`` selects the longer
    settings, ``smoke`` the shortest that run every line (1 epoch of 2 batches; for tests); ``judge`` is
    the digits classifier the first section trains, which the others use."""

    out: Path
    full: bool = False
    smoke: bool = False
    device: str | None = None
    progress: bool = True
    judge: nn.Module | None = None
    results: dict = field(default_factory=dict)

    def pick(self, quick, full):
        """The quick or the full value of a setting."""
        return full if self.full else quick

    def epochs(self, quick: int, full: int) -> int:
        return 1 if self.smoke else self.pick(quick, full)

    def train(self, name: str, **fields) -> Trainer:
        """The finished training run out/runs/NAME (see deepfast.demo.runs.trained)."""
        if self.smoke:
            fields["max_batches"] = 2
        return trained(self.out / "runs" / name, progress=self.progress, device=self.device, **fields)

    def save(self, name: str, images: Tensor, **grid) -> str:
        """Writes images (N, C, H, W) as out/images/NAME.png (deepfast.grid.save_grid options); returns
        the path relative to the report."""
        save_grid(images, self.out / "images" / f"{name}.png", **grid)
        return f"images/{name}.png"
