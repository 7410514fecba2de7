"""`deepfast attack` and `deepfast detect`: the table, the PNG, and errors that name the argument."""

import numpy as np
import pytest
import torch

from conftest import registered, tiny_digits
from deepfast import cli
from deepfast.train import TrainConfig, make_trainer

Image = pytest.importorskip("PIL.Image")  # (Pillow: optional for importing deepfast)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A classifier and a VAE checkpoint, trained briefly on the tiny digits (once for the module)."""
    out = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(1)
    with registered(tiny=tiny_digits):
        for model, options in (("classifier", {}), ("vae", {"latent_dim": 4, "width": 8})):
            make_trainer(
                TrainConfig(
                    model=model,
                    data="tiny",
                    out=str(out / model),
                    batch_size=8,
                    epochs=8,
                    lr=3e-3,
                    progress=False,
                    sample_every=0,
                    device="cpu",
                    options=options,
                )
            ).fit()
    return out


@pytest.fixture(autouse=True)
def tiny_data():
    with registered(tiny=tiny_digits):
        yield


def test_attack_prints_the_table_and_writes_the_png(runs, tmp_path, capsys):
    png = tmp_path / "adv.png"
    args = [
        "attack",
        "--ckpt",
        str(runs / "classifier" / "last.pt"),
        "--attack",
        "pgd",
        "--eps",
        "0,0.3",
        "--steps",
        "5",
        "--n",
        "12",
        "--show",
        "5",
        "--out",
        str(png),
        "--no-progress",
        "--amp",
        "bf16",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "12 samples" in out and "robust" in out and f"wrote {png}" in out
    row0 = next(line.split() for line in lines if line.split()[:1] == ["0"])
    row3 = next(line.split() for line in lines if line.split()[:1] == ["0.3"])
    assert row0[1] == row0[3]  # eps 0: robust accuracy = clean accuracy
    assert float(row3[3].rstrip("%")) < float(row0[3].rstrip("%"))  # PGD at 0.3 fools a standard LeNet
    with Image.open(png) as img:  # 5 columns, original + 2 rows per eps; 32 px digits scaled 3x, 2 px padding
        assert img.size == (5 * 98 + 2, 5 * 98 + 2) and img.mode == "RGB"
        rgb = np.asarray(img)
    red = int(((rgb[..., 0] > 200) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)).sum())
    assert red > 0  # the labels of the fooled predictions are drawn in red


def test_attack_errors_name_the_argument(runs, capsys):
    ckpt = str(runs / "classifier" / "last.pt")
    with pytest.raises(SystemExit):
        cli.main(["attack", "--ckpt", ckpt, "--attack", "pgd,nope"])
    assert "argument --attack: unknown attack 'nope'; known: fgsm, pgd" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["attack", "--ckpt", ckpt, "--eps", "0.1,x"])
    assert "argument --eps: --eps takes comma-separated numbers" in capsys.readouterr().err
    assert cli.main(["attack", "--ckpt", ckpt, "--eps", "0.1,-0.2", "--no-progress"]) == 2
    assert "--eps values must be finite and >= 0, got -0.2" in capsys.readouterr().err
    assert cli.main(["attack", "--ckpt", str(runs / "vae" / "last.pt")]) == 2
    assert "--ckpt: " in (err := capsys.readouterr().err) and "is a vae checkpoint, not a classifier" in err
    assert cli.main(["attack", "--ckpt", ckpt, "--attack", "fgsm", "--steps", "3", "--no-progress"]) == 2
    assert "--steps does not apply to attack 'fgsm'" in capsys.readouterr().err
    assert cli.main(["attack", "--ckpt", ckpt, "--attack", "fgsm,square", "--steps", "3", "--no-progress"]) == 2
    assert "--steps does not apply to attack 'fgsm', 'square'" in capsys.readouterr().err
    assert cli.main(["attack", "--ckpt", ckpt, "--n", "0"]) == 2
    assert "--n must be >= 1" in capsys.readouterr().err
    assert cli.main(["attack", "--ckpt", ckpt, "--show", "0"]) == 2
    assert "--show must be >= 1, got 0" in capsys.readouterr().err
    assert cli.main(["attack", "--ckpt", str(runs / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_detect_prints_the_auc_table(runs, capsys):
    ckpt = str(runs / "classifier" / "last.pt")
    assert (
        cli.main(
            [
                "detect",
                "--ckpt",
                ckpt,
                "--eps",
                "0.2",
                "--steps",
                "3",
                "--c",
                "1",
                "--adaptive-loss",
                "softplus",
                "--hidden",
                "8",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "ROC-AUC" in out and "PGD-3" in out and "adaptive PGD-3 softplus c=1" in out
    assert cli.main(["detect", "--ckpt", ckpt, "--layer", "nope"]) == 2
    assert "layer 'nope' is not a layer of the classifier" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["detect", "--ckpt", ckpt, "--adaptive-loss", "hinge"])
    assert "argument --adaptive-loss" in capsys.readouterr().err
