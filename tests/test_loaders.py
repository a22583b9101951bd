"""Window index arithmetic (numpy) and the torch datasets/collate helpers."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data.distributed import DistributedSampler

from sysid_msstcn.data import load_blizzard, make_io_dataset
from sysid_msstcn.data.speech import frame_clips, unframe_clips
from sysid_msstcn.data.windows import (
    random_windows,
    split_validation_tails,
    strided_windows,
    validation_tails,
    window_starts,
)
from sysid_msstcn.loaders import (
    ClipDataset,
    SequenceDataset,
    WindowDataset,
    make_loader,
    pad_collate,
)

torch.set_num_threads(1)


# --------------------------------------------------------------------------
# windows.py
# --------------------------------------------------------------------------
def test_window_starts():
    np.testing.assert_array_equal(window_starts(10, 4), [0, 4])
    np.testing.assert_array_equal(window_starts(10, 4, 3), [0, 3, 6])
    np.testing.assert_array_equal(window_starts(10, 4, cover_end=True), [0, 4, 6])
    np.testing.assert_array_equal(window_starts(8, 4, cover_end=True), [0, 4])
    assert window_starts(3, 4).size == 0
    with pytest.raises(ValueError):
        window_starts(10, 0)
    with pytest.raises(ValueError):
        window_starts(10, 2, 0)


def test_strided_windows_stay_inside_experiments():
    lengths = [10, 3, 9]
    w = strided_windows(lengths, 4, 2)
    assert w.shape[1] == 2
    assert set(w[:, 0]) == {0, 2}
    assert np.all(w[:, 1] + 4 <= np.asarray(lengths)[w[:, 0]])
    assert strided_windows([2, 3], 4).shape == (0, 2)


def test_random_windows_uniform_over_positions():
    lengths = [10, 3, 7]
    w = random_windows(lengths, 4, 20000, random_state=0)
    assert np.all(w[:, 1] >= 0)
    assert np.all(w[:, 1] + 4 <= np.asarray(lengths)[w[:, 0]])
    counts = np.bincount(w[:, 0], minlength=3) / len(w)
    np.testing.assert_allclose(counts, [7 / 11, 0, 4 / 11], atol=0.02)
    np.testing.assert_array_equal(w, random_windows(lengths, 4, 20000, 0))
    with pytest.raises(ValueError, match="window_length"):
        random_windows([2, 3], 4, 5)


def test_validation_tails():
    train, valid = validation_tails([100, 10], 0.2)
    np.testing.assert_array_equal(train, [[0, 80], [0, 8]])
    np.testing.assert_array_equal(valid, [[80, 100], [8, 10]])
    train, valid = validation_tails([5], 0.0)
    np.testing.assert_array_equal(valid, [[5, 5]])
    _, valid = validation_tails([50], 0.001, min_length=3)
    np.testing.assert_array_equal(valid, [[47, 50]])
    with pytest.raises(ValueError, match="too short"):
        validation_tails([1], 0.5)
    with pytest.raises(ValueError):
        validation_tails([10], 1.0)


def test_split_validation_tails_arrays_and_pairs():
    u, y = np.arange(10.0), -np.arange(10.0)
    train, valid = split_validation_tails([(u, y), y[:5]], 0.2)
    np.testing.assert_array_equal(train[0][0], u[:8])
    np.testing.assert_array_equal(valid[0][1], y[8:])
    np.testing.assert_array_equal(valid[1], y[4:5])
    train, valid = split_validation_tails([u], 0.0)
    assert len(valid) == 0 and len(train[0]) == 10


# --------------------------------------------------------------------------
# loaders.py
# --------------------------------------------------------------------------
def _experiments():
    rng = np.random.default_rng(0)
    return [
        (rng.normal(size=(50, 1)), rng.normal(size=(50, 2))),
        (rng.normal(size=30), rng.normal(size=(30, 2))),
    ]


def test_window_dataset_strided_items():
    exps = _experiments()
    ds = WindowDataset(exps, 16, stride=8)
    assert len(ds) == len(strided_windows([50, 30], 16, 8))
    for i in range(len(ds)):
        u, y = ds[i]
        assert u.shape == (1, 16) and y.shape == (2, 16) and u.dtype == torch.float32
        e, s = ds.windows[i]
        np.testing.assert_allclose(y.numpy(), exps[e][1][s : s + 16].T, rtol=1e-6)
        u_ref = np.asarray(exps[e][0]).reshape(len(exps[e][0]), -1)[s : s + 16].T
        np.testing.assert_allclose(u.numpy(), u_ref, rtol=1e-6)
    batch_u, batch_y = next(iter(make_loader(ds, batch_size=4)))
    assert batch_u.shape == (4, 1, 16) and batch_y.shape == (4, 2, 16)


def test_window_dataset_random_epochs_reproducible():
    exps = _experiments()
    a = WindowDataset(exps, 20, n_windows=64, random_state=3)
    b = WindowDataset(exps, 20, n_windows=64, random_state=3)
    np.testing.assert_array_equal(a.windows, b.windows)
    first = a.windows.copy()
    a.set_epoch(1)
    assert not np.array_equal(first, a.windows)
    b.set_epoch(1)
    np.testing.assert_array_equal(a.windows, b.windows)
    assert len(a) == 64


def test_window_dataset_accepts_xarray_and_output_only():
    ds = make_io_dataset(np.arange(40.0), np.arange(40.0) * 2, sampling_time=0.1)
    wd = WindowDataset([ds], 10)
    u, y = wd[1]
    np.testing.assert_array_equal(y.numpy(), 2 * u.numpy())
    assert u.dtype == torch.float32
    only = WindowDataset([np.arange(25.0)], 10, dtype=torch.float64)
    assert len(only) == 2 and only[1].shape == (1, 10)
    assert only[1].dtype == torch.float64
    with pytest.raises(ValueError, match="samples long"):
        WindowDataset([np.arange(5.0)], 10)
    with pytest.raises(ValueError, match="lengths differ"):
        WindowDataset([(np.arange(5.0), np.arange(6.0))], 2)


def test_distributed_sampler_partitions_windows():
    ds = WindowDataset(_experiments(), 8, stride=4)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True)
        sampler.set_epoch(0)
        loader = make_loader(ds, batch_size=3, sampler=sampler, shuffle=True)
        seen.append(list(sampler))
        assert sum(b[0].shape[0] for b in loader) == len(seen[-1])
    assert len(seen[0]) == len(seen[1])
    assert set(seen[0]) | set(seen[1]) == set(range(len(ds)))


def test_pad_collate_masks_and_lengths():
    items = [torch.ones(3, 5), 2 * torch.ones(3, 2), torch.arange(9.0).reshape(3, 3)]
    y, mask, lengths = pad_collate(items)
    assert y.shape == (3, 3, 5) and mask.shape == (3, 5) and mask.dtype == torch.bool
    assert lengths.tolist() == [5, 2, 3]
    assert mask.sum(dim=1).tolist() == [5, 2, 3]
    assert torch.all(y[1, :, 2:] == 0) and torch.all(y[1, :, :2] == 2)
    torch.testing.assert_close(y[2, :, :3], items[2])
    with pytest.raises(ValueError):
        pad_collate([torch.ones(3, 5), torch.ones(2, 5)])
    with pytest.raises(ValueError):
        pad_collate([])


def test_sequence_dataset_with_pad_collate():
    seqs = [np.random.default_rng(i).normal(size=(n, 3)) for i, n in enumerate([7, 4])]
    ds = SequenceDataset(seqs)
    assert ds[0].shape == (3, 7)
    y, mask, lengths = next(iter(make_loader(ds, 2, collate_fn=pad_collate)))
    assert y.shape == (2, 3, 7) and lengths.tolist() == [7, 4]
    np.testing.assert_allclose(y[1, :, :4].numpy(), seqs[1].T, rtol=1e-6)
    assert not mask[1, 4:].any()


def test_clip_dataset_reads_lazily(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        sf.write(str(audio / f"f{i}.wav"), rng.uniform(-0.5, 0.5, 16500), 16000)
    data = load_blizzard(audio, tmp_path / "cache", frame_width=25)
    ds = ClipDataset(data.train)
    assert len(ds) == len(data.train) > 0
    item = ds[0]
    assert item.shape == (25, 320) and item.dtype == torch.float32
    np.testing.assert_array_equal(item.numpy(), data.train[0].T)
    loader = make_loader(ds, batch_size=2, shuffle=True, seed=0, num_workers=1)
    batch = next(iter(loader))
    assert batch.shape[1:] == (25, 320)


# --------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=5),
    window=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_windows_never_cross_experiments(lengths, window, seed):
    arr = np.asarray(lengths)
    strided = strided_windows(lengths, window, max(1, window // 2), cover_end=True)
    assert np.all(strided[:, 1] + window <= arr[strided[:, 0]])
    if (arr >= window).any():
        w = random_windows(lengths, window, 50, seed)
        assert np.all((w[:, 1] >= 0) & (w[:, 1] + window <= arr[w[:, 0]]))
        # cover_end reaches the last sample of every long-enough experiment
        for e in np.flatnonzero(arr >= window):
            assert strided[strided[:, 0] == e, 1].max() + window == arr[e]


@settings(max_examples=25, deadline=None)
@given(
    t=st.integers(1, 20),
    fw=st.integers(1, 20),
    mode=st.sampled_from(["contiguous", "strided"]),
)
def test_framing_round_trip_property(t, fw, mode):
    x = np.arange(2 * t * fw).reshape(2, t * fw)
    frames = frame_clips(x, fw, mode)
    assert frames.shape == (2, t, fw)
    np.testing.assert_array_equal(unframe_clips(frames, mode), x)
