"""Building blocks: causality, resampling values and lengths, delay and gate."""

from __future__ import annotations

import math

import pytest
import torch

from sysid_msstcn.layers import (
    CausalConv1d,
    DownsampleBlock,
    GatedBlock,
    UpsampleBlock,
    delay,
    gate,
    pool_blocks,
    repeat_blocks,
)

RESAMPLING = ("learned", "fixed")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _nan_from(x: torch.Tensor, t0: int) -> torch.Tensor:
    x = x.clone()
    x[..., t0:] = float("nan")
    return x


@pytest.mark.parametrize(("kernel_size", "dilation"), [(1, 1), (2, 1), (2, 4), (3, 2)])
def test_causal_conv_keeps_length_and_ignores_the_future(kernel_size, dilation):
    # NaN injection (philgzl/brever style): NaNs from t0 on leave outputs < t0 finite
    conv = CausalConv1d(3, 5, kernel_size, dilation)
    x = torch.randn(2, 3, 20)
    assert conv(x).shape == (2, 5, 20)
    for t0 in (0, 1, 7, 19):
        out = conv(_nan_from(x, t0))
        assert torch.isfinite(out[..., :t0]).all()
        assert torch.isnan(out[..., t0:]).all()


@pytest.mark.parametrize(("kernel_size", "dilation"), [(2, 1), (2, 3)])
def test_causal_conv_receptive_field_is_exact(kernel_size, dilation):
    # a perturbation at t0 reaches exactly t0 ... t0 + (k - 1) * dilation
    conv = CausalConv1d(1, 1, kernel_size, dilation)
    x = torch.randn(1, 1, 30)
    t0 = 10
    x2 = x.clone()
    x2[..., t0] += 1.0
    changed = (conv(x2) - conv(x)).abs()[0, 0] > 0
    expected = torch.zeros(30, dtype=torch.bool)
    expected[t0 : t0 + (kernel_size - 1) * dilation + 1 : dilation] = True
    assert torch.equal(changed, expected)


@pytest.mark.parametrize("cond_channels", [0, 2])
def test_gated_block_is_causal(cond_channels):
    # NaN in x or in the conditioning from t0 on never reaches outputs before t0
    block = GatedBlock(4, 6, kernel_size=2, dilation=2, cond_channels=cond_channels)
    x = torch.randn(2, 4, 16)
    cond = torch.randn(2, cond_channels, 16) if cond_channels else None
    assert block(x, cond).shape == (2, 6, 16)
    for t0 in (0, 3, 15):
        out = block(_nan_from(x, t0), cond)
        assert torch.isfinite(out[..., :t0]).all()
        assert torch.isnan(out[..., t0:]).all()
        if cond is not None:
            out = block(x, _nan_from(cond, t0))
            assert torch.isfinite(out[..., :t0]).all()


def test_gate_is_tanh_times_sigmoid_of_the_halves():
    # gate([a, b]) = tanh(a) * sigmoid(b), a the first channel half
    a, b = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    torch.testing.assert_close(
        gate(torch.cat([a, b], 1)), torch.tanh(a) * torch.sigmoid(b)
    )


def test_delay_shifts_by_one_and_prepends_zero():
    x = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    expected = torch.tensor([[[0.0, 1.0, 2.0], [0.0, 4.0, 5.0]]])
    assert torch.equal(delay(x), expected)


def test_pool_blocks_mean_and_scaled_sum_on_hand_made_input():
    # blocks aligned to the start, right-padded with zeros
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0]]])
    torch.testing.assert_close(
        pool_blocks(x, 2, "mean"), torch.tensor([[[1.5, 3.5, 2.5]]])
    )
    r2 = math.sqrt(2.0)
    torch.testing.assert_close(
        pool_blocks(x, 2, "scaled_sum"), torch.tensor([[[3 / r2, 7 / r2, 5 / r2]]])
    )
    r3 = math.sqrt(3.0)
    torch.testing.assert_close(
        pool_blocks(x, 3, "scaled_sum"), torch.tensor([[[6 / r3, 9 / r3]]])
    )
    torch.testing.assert_close(pool_blocks(x, 3, "mean"), torch.tensor([[[2.0, 3.0]]]))
    assert torch.equal(pool_blocks(x, 1, "mean"), x)


def test_repeat_blocks_is_nearest_neighbour():
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    expected = torch.tensor(
        [[[1.0, 1.0, 1.0, 2.0, 2.0, 2.0], [3.0, 3.0, 3.0, 4.0, 4.0, 4.0]]]
    )
    assert torch.equal(repeat_blocks(x, 3), expected)
    assert torch.equal(repeat_blocks(x, 1), x)


@pytest.mark.parametrize("resampling", RESAMPLING)
@pytest.mark.parametrize("stride", [2, 4, 5])
@pytest.mark.parametrize("n_steps", [1, 7, 10, 13, 20])
def test_downsample_and_upsample_lengths(resampling, stride, n_steps):
    down = DownsampleBlock(
        3, 4, stride, kernel_size=2, dilation=1, resampling=resampling
    )
    x = torch.randn(2, 3, n_steps)
    n_coarse = math.ceil(n_steps / stride)
    assert down(x).shape == (2, 4, n_coarse)
    up = UpsampleBlock(4, 3, stride, cond_channels=2, resampling=resampling)
    out = up(torch.randn(2, 4, n_coarse), torch.randn(2, 2, n_coarse))
    assert out.shape == (2, 3, n_coarse * stride)


@pytest.mark.parametrize("resampling", RESAMPLING)
@pytest.mark.parametrize("stride", [2, 5])
def test_downsample_identity_path(resampling, stride):
    # with the residual output zeroed the block is the pooling of its input
    down = DownsampleBlock(3, 3, stride, resampling=resampling)
    torch.nn.init.zeros_(down.out.weight)
    x = torch.randn(2, 3, 3 * stride + 1)
    mode = "mean" if resampling == "learned" else "scaled_sum"
    torch.testing.assert_close(down(x), pool_blocks(x, stride, mode))
    if resampling == "fixed":  # scaled sum: block sum / sqrt(S), not a mean
        block_sum = x[..., :stride].sum(-1)
        torch.testing.assert_close(down(x)[..., 0], block_sum / math.sqrt(stride))


@pytest.mark.parametrize("resampling", RESAMPLING)
@pytest.mark.parametrize("stride", [2, 4, 5])
def test_downsample_is_block_causal(resampling, stride):
    # coarse step j only sees fine steps < (j + 1) * S
    down = DownsampleBlock(
        2, 4, stride, kernel_size=2, dilation=2, resampling=resampling
    )
    x = torch.randn(1, 2, 4 * stride)
    for t0 in range(0, 4 * stride, max(stride // 2, 1)):
        out = down(_nan_from(x, t0))
        n_ok = t0 // stride  # blocks that end before t0
        assert torch.isfinite(out[..., :n_ok]).all()
        assert torch.isnan(out[..., n_ok:]).all()


@pytest.mark.parametrize("resampling", RESAMPLING)
@pytest.mark.parametrize("stride", [2, 5])
def test_upsample_fine_step_sees_only_its_coarse_step(resampling, stride):
    # fine step t depends on coarse step t // S only (no look-ahead across blocks)
    up = UpsampleBlock(3, 2, stride, cond_channels=1, resampling=resampling)
    x, c = torch.randn(1, 3, 4), torch.randn(1, 1, 4)
    for j0 in range(4):
        xn = x.clone()
        xn[..., j0] = float("nan")
        out = up(xn, c)
        assert torch.isfinite(out[..., : j0 * stride]).all()
        assert torch.isnan(out[..., j0 * stride : (j0 + 1) * stride]).all()
        assert torch.isfinite(out[..., (j0 + 1) * stride :]).all()


@pytest.mark.parametrize("stride", [2, 5])
def test_upsample_identity_path_and_fixed_piecewise_constant(stride):
    # identity path repeats the input; the fixed variant is constant over a block
    for resampling in RESAMPLING:
        up = UpsampleBlock(3, 3, stride, resampling=resampling)
        x = torch.randn(2, 3, 4)
        out = up(x)
        if resampling == "fixed":
            blocks = out.reshape(2, 3, 4, stride)
            assert torch.equal(blocks, blocks[..., :1].expand_as(blocks))
        else:  # a learned transposed kernel varies within a block
            blocks = out.reshape(2, 3, 4, stride)
            assert (blocks - blocks[..., :1]).abs().max() > 1e-6
        torch.nn.init.zeros_(up.out.weight)
        torch.testing.assert_close(up(x), repeat_blocks(x, stride))
