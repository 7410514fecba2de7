"""deepfast.nn.recompute_batchnorm against the batch statistics computed by hand in float64."""

import pytest
import torch
from torch import nn

from deepfast.nn import BatchNormLeakyReLU2d, recompute_batchnorm


def model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3), BatchNormLeakyReLU2d(5, 0.2, momentum=0.3), nn.Conv2d(5, 4, 1), nn.BatchNorm2d(4)
    ).double()


def test_recompute_batchnorm_averages_the_batch_statistics():
    net = model().eval()
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(n, 3, 7, 9, generator=gen, dtype=torch.float64) for n in (6, 5, 11)]
    recompute_batchnorm(net, ((x,) for x in batches))
    assert not net.training and net[1].momentum == 0.3 and net[3].momentum == 0.1
    for layer, before in ((1, net[:1]), (3, net[:3])):
        with torch.no_grad():
            net.train()
            hs = [before(x) for x in batches]  # the layers before use their batch statistics too
            net.eval()
        means = torch.stack([h.mean((0, 2, 3)) for h in hs]).mean(0)
        variances = torch.stack([h.transpose(0, 1).flatten(1).var(1) for h in hs]).mean(0)  # unbiased
        torch.testing.assert_close(net[layer].running_mean, means)
        torch.testing.assert_close(net[layer].running_var, variances)
        assert net[layer].num_batches_tracked == 3


def test_recompute_batchnorm_keeps_train_mode_and_refuses_no_batches():
    net = model().train()
    recompute_batchnorm(net, [(torch.randn(4, 3, 5, 5, dtype=torch.float64),)])
    assert net.training
    stats = [b.clone() for b in net.buffers()]
    with pytest.raises(ValueError, match="no batch"):
        recompute_batchnorm(net, [])
    assert all(torch.equal(a, b) for a, b in zip(stats, net.buffers()))
