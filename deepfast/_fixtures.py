"""A small trained model that the tests (tests/test_attacks*.py) and the benchmarks
(benchmarks/bench_attacks.py) share: the classifier the attacks are run against."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from deepfast.data import digits
from deepfast.models import LeNet


def train_lenet() -> nn.Module:
    """LeNet trained for 3 epochs on the training digits (about 93% validation accuracy), in eval mode;
    a plain loop (Adam, batch 64, lr 3e-3, torch.manual_seed(0)), about 0.3 s on 2 CPU cores."""
    torch.manual_seed(0)
    train = digits("train", size=32)
    model = LeNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        order = torch.randperm(len(train))
        for i in range(0, len(train), 64):
            batch = order[i : i + 64]
            loss = F.cross_entropy(model(train.images[batch]), train.labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
