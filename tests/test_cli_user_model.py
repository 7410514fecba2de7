"""`deepfast attack` / `deepfast detect` on a model of the user's own (``small_model`` below): --model,
--weights (a state_dict, loaded without running code), --normalization, --data folder:PATH; errors
that name the flag; and `deepfast attack` and ``evaluate`` under torchrun (2 CPU processes, gloo) giving
the table of one process, bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from deepfast import cli
from deepfast.data import digits, image_folder

Image = pytest.importorskip("PIL.Image")  # (Pillow: optional for importing deepfast)

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = 0.5, 0.1
ROOT = Path(__file__).resolve().parents[1]


def small_model() -> nn.Module:
    """The user's model: 16x16 gray digits, normalized by (MEAN, STD), -> 10 logits."""
    return nn.Sequential(nn.Flatten(), nn.Linear(256, 48), nn.ReLU(), nn.Linear(48, 10))


def write_folder(root: Path, images: torch.Tensor, labels: torch.Tensor, classes: int = 10) -> Path:
    """A folder of PNGs, one subfolder per class ("c00", "c01", ...; sorted names = class indices)."""
    for c in range(classes):
        (root / f"c{c:02d}").mkdir(parents=True, exist_ok=True)
    for i, (x, y) in enumerate(zip(images, labels)):
        Image.fromarray(np.round(x[0].numpy() * 255).astype(np.uint8)).save(root / f"c{int(y):02d}" / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """(weights file, folder of 80 held-out digits, the same images as read back) for ``small_model``,
    trained on normalized digits."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("user")
    train, held_out = digits("train", size=16), digits("val", size=16)
    model = small_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        loss = F.cross_entropy(model((train.images - MEAN) / STD), train.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(model.state_dict(), tmp / "weights.pt")
    folder = write_folder(tmp / "digits", held_out.images[:80], held_out.labels[:80])
    return tmp / "weights.pt", folder


def run_attack(args, capsys):
    assert cli.main(["attack", *args, "--no-progress"]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def table_rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["0.1"])}


def test_attack_a_users_model_on_a_folder(user_files, tmp_path, capsys):
    weights, folder = user_files
    common = [
        "--model",
        "tests.test_cli_user_model:small_model",
        "--weights",
        str(weights),
        "--data",
        f"folder:{folder}",
        "--eps",
        "0,0.1",
        "--steps",
        "5",
        "--show",
        "4",
        "--out",
        str(tmp_path / "adv.png"),
    ]
    out = run_attack([*common, "--normalization", f"{MEAN},{STD}"], capsys)
    assert "tests.test_cli_user_model:small_model: pgd on folder:" in out and "80 samples" in out
    rows = table_rows(out)
    clean = float(rows["0"][1].rstrip("%"))
    assert clean > 80 and rows["0"][3] == rows["0"][1]  # eps 0: robust = clean
    assert float(rows["0.1"][3].rstrip("%")) < clean  # PGD at 0.1 fools some
    assert (tmp_path / "adv.png").is_file()
    # the clean accuracy is that of the model on the folder's images, normalized (or not, without the flag)
    data = image_folder(folder)
    x, y = torch.stack([data[i][0] for i in range(80)]), torch.stack([data[i][1] for i in range(80)])
    model = small_model()
    model.load_state_dict(torch.load(weights, weights_only=True))
    with torch.no_grad():
        normalized, raw = ((model(t).argmax(1) == y).float().mean().item() for t in ((x - MEAN) / STD, x))
    assert rows["0"][1] == f"{100 * normalized:.1f}%" and normalized != raw
    assert table_rows(run_attack(common, capsys))["0"][1] == f"{100 * raw:.1f}%"
    out = run_attack(
        [*common, "--normalization", f"{MEAN},{STD}", "--attack", "autoattack", "--steps", "2", "--eps", "0.1"], capsys
    )
    assert "after APGD" in out and "after APGDT" in out and "after FABT" in out and "after Square" in out


def test_detect_a_users_model(user_files, capsys):
    weights, folder = user_files
    assert (
        cli.main(
            [
                "detect",
                "--model",
                "tests.test_cli_user_model:small_model",
                "--weights",
                str(weights),
                "--normalization",
                f"{MEAN},{STD}",
                "--data",
                f"folder:{folder}",
                "--layer",
                "2",
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
    assert "ROC-AUC" in out and "PGD-3" in out


def test_user_model_errors_name_the_flag(user_files, tmp_path, capsys):
    weights, folder = user_files
    model = ["--model", "tests.test_cli_user_model:small_model"]

    def error(*args):
        assert cli.main(["attack", *args, "--no-progress"]) == 2
        return capsys.readouterr().err

    twelve = write_folder(tmp_path / "twelve", digits("val", size=16).images[:24], torch.arange(24) % 12, classes=12)
    err = error(*model, "--weights", str(weights), "--data", f"folder:{twelve}")
    assert "the outputs of tests.test_cli_user_model:small_model do not fit the labels of --data folder:" in err
    assert "gives 10 logits per image, the data has 12 classes" in err
    torch.save(small_model(), tmp_path / "pickled_module.pt")  # a whole module: unpickling it would run code
    assert "--weights" in error(*model, "--weights", str(tmp_path / "pickled_module.pt"), "--data", f"folder:{folder}")
    torch.save({"0.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    assert "does not fit --model" in error(
        *model, "--weights", str(tmp_path / "other.pt"), "--data", f"folder:{folder}"
    )
    assert "--model takes package.module:factory" in error("--model", "nonsense", "--data", f"folder:{folder}")
    assert "cannot import" in error("--model", "no_such_package.mod:f", "--data", f"folder:{folder}")
    assert "--data: --model needs the images" in error(*model)
    assert "cannot take the images" in error(*model, "--data", f"folder:{folder}", "--image-size", "8")
    with pytest.raises(SystemExit):
        cli.main(["attack", *model, "--normalization", "0.5", "--data", f"folder:{folder}"])
    assert "--normalization takes MEAN,STD" in capsys.readouterr().err


DISTRIBUTED_SCRIPT = """
import functools, json, os, sys
import torch
import torch.distributed as dist
from deepfast import cli
from deepfast.attacks import FABT, Square, evaluate
from tests.test_cli_user_model import small_model

out, weights, folder = sys.argv[1:4]
torch.set_num_threads(1)
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    dist.init_process_group("gloo")
rank = dist.get_rank() if dist.is_initialized() else 0
model = small_model()
model.load_state_dict(torch.load(weights, weights_only=True))
model.eval()
from deepfast.data import image_folder
data = image_folder(folder)
x = torch.stack([data[i][0] for i in range(len(data))]); y = torch.stack([data[i][1] for i in range(len(data))])
attacks = ["pgd", functools.partial(FABT, steps=5, targets=2), functools.partial(Square, queries=30)]
kw = dict(eps=[0.05, 0.1], batch_size=16, normalization=(0.5, 0.1), progress=False)
results = {"tensors": evaluate(model, (x, y), attacks, **kw).__dict__,
           "dataset": evaluate(model, data, attacks, **kw).__dict__,
           "loader": evaluate(model, torch.utils.data.DataLoader(data, batch_size=16), attacks, **kw).__dict__}
if rank == 0:
    json.dump(results, open(out, "w"))
cli.main(["attack", "--model", "tests.test_cli_user_model:small_model", "--weights", weights, "--data", "folder:" + folder,
          "--normalization", "0.5,0.1", "--attack", "pgd,square", "--eps", "0.05,0.1", "--steps", "4",
          "--batch-size", "16", "--no-progress", "--out", out + ".png"])
if dist.is_initialized():
    dist.destroy_process_group()
"""


def test_two_processes_give_the_table_of_one(user_files, tmp_path):
    weights, folder = user_files
    script = tmp_path / "evaluate.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    outs = {}
    for n in (1, 2):
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={n}",
                str(script),
                str(tmp_path / f"out{n}.json"),
                str(weights),
                str(folder),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        outs[n] = run.stdout
    import json

    one, two = (json.loads((tmp_path / f"out{n}.json").read_text()) for n in (1, 2))
    assert one == two  # every field, bit for bit (floats through JSON's repr)
    assert one["tensors"] == one["dataset"] == one["loader"]
    assert one["tensors"]["n"] == 80 and 0 < one["tensors"]["robust_accuracy"][1] < one["tensors"]["clean_accuracy"]
    tables = [out[out.index("80 samples") : out.index("wrote")] for out in (outs[1], outs[2])]
    assert "2 processes" in outs[2] and tables[0] == tables[1] and "after Square" in tables[0]
