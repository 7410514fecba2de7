"""deepfast.plots: training curves and line panels are PNG files that load; bad input is an error."""

import pytest

from deepfast.plots import line_panels, training_curves

Image = pytest.importorskip("PIL.Image")  # (Pillow: optional for importing deepfast)


def test_training_curves_write_a_png_with_a_panel_per_metric(tmp_path):
    rows = [{"epoch": e, "loss": 1 / e, "acc": 0.5 + e / 20, "lr": 1e-3, "time": 1e9 + e} for e in range(1, 6)]
    path = training_curves(rows, tmp_path / "sub" / "c.png", title="run")
    with Image.open(path) as img:
        img.verify()
    few = training_curves(rows, tmp_path / "one.png", columns=["loss"])
    with Image.open(path) as wide, Image.open(few) as narrow:
        assert wide.size[0] > narrow.size[0]  # two panels against one
    with pytest.raises(ValueError, match="rows"):
        training_curves([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="columns"):
        training_curves([{"epoch": 1, "time": 0.0}], tmp_path / "x.png")
    assert not list(tmp_path.glob(".*.tmp"))


def test_line_panels(tmp_path):
    panel = {
        "x": [1, 2, 3],
        "curves": {"a": [0.1, 0.5, 0.9], "b": [1, 1, 0]},
        "xlabel": "x",
        "ylabel": "y",
        "ylim": (0, 1),
    }
    with Image.open(line_panels([panel, panel], tmp_path / "p.png", title="t")) as img:
        img.verify()
    with pytest.raises(ValueError, match="curve 'a'"):
        line_panels([{**panel, "curves": {"a": [1, 2]}}], tmp_path / "q.png")
