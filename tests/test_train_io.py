"""What a run writes: atomic checkpoints, metrics files, PNG grids."""

import errno
import json
import os

import numpy as np
import pytest
import torch

from deepfast.grid import make_grid, save_grid
from deepfast.train import atomic_save, load_checkpoint
from deepfast.train.checkpoint import KEYS
from deepfast.train.records import MetricsLog

Image = pytest.importorskip("PIL.Image")  # (Pillow: optional for importing deepfast)


def checkpoint(**values):
    """The smallest dict load_checkpoint accepts (every key of KEYS, of its type), with ``values``."""
    return {**{key: kind() for key, kind in KEYS.items()}, **values}


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save(checkpoint(models={"a": 1}), path)

    class Unpicklable:
        pass

    with pytest.raises(TypeError, match="tensors and plain values only, got a Unpicklable"):
        atomic_save(checkpoint(models={"a": Unpicklable()}), path)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # the write fails once the bytes are handed to the OS
    with pytest.raises(
        OSError,
        match=r"cannot write checkpoint .*last.pt: No space left on device \(the previous "
        r"last.pt is kept as it was\)",
    ) as err:
        atomic_save(checkpoint(models={"a": 2}), path)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert load_checkpoint(path)["models"] == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_load_checkpoint_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint .*junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt is not a deepfast training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_metrics_log_appends_truncates_and_widens_the_csv(tmp_path):
    log = MetricsLog(tmp_path)
    log.append({"epoch": 1, "loss": 2.0})
    log.append({"epoch": 2, "loss": 1.0, "val_acc": 0.5})
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["epoch,loss,val_acc", "1,2.0,", "2,1.0,0.5"]
    reopened = MetricsLog(tmp_path)
    reopened.truncate(1)
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        {"epoch": 1, "loss": 2.0}
    ]
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["epoch,loss", "1,2.0"]


def test_grid_layout_values_and_png(tmp_path):
    images = torch.stack([torch.full((3, 4, 5), v) for v in (-1.0, 0.0, 1.0, 3.0, -5.0)])
    grid = make_grid(images, nrow=3, value_range=(-1, 1), padding=1)
    assert grid.shape == (2 * 5 + 1, 3 * 6 + 1, 3) and grid.dtype == np.uint8
    assert grid[1, 1, 0] == 0 and grid[1, 7, 0] == 128 and grid[1, 13, 0] == 255  # -1, 0, 1
    assert grid[6, 1, 0] == 255 and grid[6, 7, 0] == 0  # clipped
    assert (grid[0] == 255).all() and (grid[6:, 13:] == 255).all()  # padding and the empty cell are white
    gray = make_grid(torch.rand(4, 1, 3, 3), scale=2, padding=0)
    assert gray.shape == (12, 12)
    path = save_grid(images, tmp_path / "sub" / "g.png", nrow=5)
    with Image.open(path) as img:
        assert img.size == (5 * 7 + 2, 4 + 4) and img.mode == "RGB"


def test_grid_bad_input():
    with pytest.raises(ValueError, match="images must be a \\(N, C, H, W\\) tensor with C = 1 or 3"):
        make_grid(torch.rand(2, 2, 4, 4))
    with pytest.raises(ValueError, match="empty"):
        make_grid(torch.rand(0, 3, 4, 4))
