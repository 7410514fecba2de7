"""How the Triton wrappers launch (kernels/): grids sized to the problem, one axis only, no needless
allocations. Pure Python: the grids are computed, not run."""

import pytest
import torch

pytest.importorskip("triton")

from deepfast.kernels import cycle_l1, norm_leaky_relu, pgd_step  # noqa: E402
from deepfast.ops.norm_leaky_relu import layout  # noqa: E402


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
def test_batch_norm_statistics_spread_over_many_programs(channels_last):
    """BN over (256, 64, 56, 56): a group (channel) of 802816 values is split into chunks, so the statistics
    pass has thousands of programs (one per channel, or per 32 channels, was 64 or 2 on a 132-SM GPU)."""
    x = torch.empty(256, 64, 56, 56, device="meta")
    x = x.to(memory_format=torch.channels_last) if channels_last else x
    geo = norm_leaky_relu.Geometry(*layout(x, instance=False)[:4], torch.float32)
    assert geo.programs >= 2000
    assert geo.chunks * geo.rows >= geo.R and geo.ctiles * (geo.block_w if geo.columns else 1) >= geo.C


def test_long_rows_are_cut_into_segments():
    """Instance norm of (1, 64, 256, 256): 65536 values per plane, more than a chunk: several per group."""
    geo = norm_leaky_relu.Geometry(
        *layout(torch.empty(1, 64, 256, 256, device="meta"), instance=True)[:4], torch.float32
    )
    assert geo.spr == 4 and geo.programs == 64 * 4


def test_many_channels_use_one_grid_axis(monkeypatch):
    """C = 70000 > 65535 (the limit of grid axes 1 and 2): every norm_leaky_relu launch has a 1-D grid."""
    grids = []

    class Recorder:
        def __getitem__(self, grid):
            grids.append(grid)
            return lambda *args, **kwargs: None

    for name in ("_sums_kernel", "_finish_kernel", "_apply_kernel"):
        monkeypatch.setattr(norm_leaky_relu, name, Recorder())
    for cl in (False, True):
        x = torch.zeros(2, 70000, 1, 2).contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
        shape = layout(x, instance=False)[:4]
        norm_leaky_relu.forward(x, None, None, None, None, shape, 1e-5, 0.2, False)
        mean = torch.zeros(70000)
        norm_leaky_relu.backward(x, x, None, None, mean, mean, shape, True, 1e-5, 0.2, False)
    assert grids and all(len(g) == 1 for g in grids)


def test_pgd_tile_fills_the_gpu(monkeypatch):
    """Batch 128 of 3x32x32 images on a 132-SM GPU: tiles of 1024 (3 per sample), not one program per sample."""
    monkeypatch.setattr(pgd_step, "_sm_count", lambda device: 132)
    assert pgd_step._tile_size(128, 3 * 32 * 32, torch.device("cuda")) == 1024
    assert pgd_step._tile_size(1, 3 * 224 * 224, torch.device("cuda")) == 1024
    assert pgd_step._tile_size(100_000, 3 * 224 * 224, torch.device("cuda")) == pgd_step.MAX_TILE


def test_cycle_reads_inputs_of_one_layout_without_copies(monkeypatch):
    """Dense rec and orig of one layout are used as they are: nothing is allocated to compare layouts."""
    calls = []
    real = torch.empty_like
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: calls.append(a) or real(*a, **k))
    for fmt in (torch.contiguous_format, torch.channels_last):
        rec, orig = (torch.randn(2, 3, 4, 5).contiguous(memory_format=fmt) for _ in range(2))
        assert all(t is u for t, u in zip(cycle_l1._same_layout(rec, orig), (rec, orig)))
    assert calls == []
    rec = torch.randn(2, 3, 4, 10)[..., ::2]  # strided: copied
    dense_rec, dense_orig = cycle_l1._same_layout(rec, torch.randn(2, 3, 4, 5))
    assert dense_rec.is_contiguous() and dense_orig.stride() == dense_rec.stride()
