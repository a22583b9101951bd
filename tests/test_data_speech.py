"""Speech adapter: decoding, clip cache, splits, statistics, framing, bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import soundfile as sf

from sysid_msstcn.data import speech
from sysid_msstcn.data._audio import NpyAppender
from sysid_msstcn.data.speech import (
    ClipStore,
    SpeechStatistics,
    decode_audio,
    frame_clips,
    load_blizzard,
    load_speech_clips,
    split_by_file,
    split_from_lists,
    trim_zeros,
    unframe_clips,
)
from sysid_msstcn.exceptions import DataFormatError, ShapeError

# file -> full 8000-sample clips after zero trimming (SAMPLES_PROVENANCE.md)
KNOWN_COUNTS = {
    "cmu_arctic/arctic_a0007.wav": 8,
    "decoded_16k/linda_johnson_01.wav": 96,
    "espeak_synthetic/espeak_en_us_16k.wav": 16,
}


@pytest.fixture(scope="module")
def standin(shared_data):
    return shared_data / "blizzard" / "standin"


@pytest.fixture(scope="module")
def store(standin, tmp_path_factory):
    return load_speech_clips(standin, tmp_path_factory.mktemp("cache"))


def _write(path, x, rate=16000):
    sf.write(str(path), x, rate, subtype="PCM_16")
    return path


def test_clip_counts_match_durations(store, standin):
    assert len(store.files) == 6
    for entry in store.files:
        info = sf.info(str(standin / entry["path"]))
        expected_samples = info.frames * 16000 / info.samplerate
        assert abs(entry["n_samples"] - expected_samples) <= 1
        kept = entry["n_samples"] - entry["n_leading"] - entry["n_trailing"]
        assert entry["count"] == kept // 8000
        trimmed_s = (entry["n_leading"] + entry["n_trailing"]) / 16000
        assert entry["count"] <= 2 * info.duration < entry["count"] + 1 + 2 * trimmed_s
        if entry["path"] in KNOWN_COUNTS:
            assert entry["count"] == KNOWN_COUNTS[entry["path"]]
    decoded = next(f for f in store.files if f["path"].startswith("decoded_16k"))
    assert (decoded["n_leading"], decoded["n_trailing"]) == (4306, 14210)
    assert len(store) == sum(f["count"] for f in store.files)
    assert store.clips.shape == (len(store), 8000)
    assert isinstance(store.clips, np.memmap) and store.clips.dtype == np.int16


def test_cached_clips_equal_decoded_samples(store, standin):
    entry = store.files[0]
    x, _, _ = trim_zeros(decode_audio(standin / entry["path"]))
    rows = store[entry["start"] : entry["start"] + entry["count"]]
    np.testing.assert_array_equal(rows.reshape(-1), x[: entry["count"] * 8000])
    raw, _ = sf.read(str(standin / entry["path"]), dtype="int16")
    np.testing.assert_array_equal(decode_audio(standin / entry["path"]), raw)


def test_mp3_decodes_close_to_ffmpeg(standin):
    mp3 = decode_audio(
        standin / "train/unsegmented/ljspeech_librivox/linda_johnson_01.mp3"
    )
    ref = decode_audio(standin / "decoded_16k/linda_johnson_01.wav")
    assert mp3.shape == ref.shape
    assert np.corrcoef(mp3, ref)[0, 1] > 0.999


def test_standardised_training_clips(store):
    split = split_by_file(store)
    stats = SpeechStatistics.fit(store, split.train)
    z = stats.transform(store[np.sort(split.train)])
    assert z.dtype == np.float32
    assert abs(float(z.mean())) < 1e-4
    assert float(z.std()) == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(
        stats.inverse_transform(z), store[np.sort(split.train)] / 32768.0, atol=1e-6
    )
    x = store[:]
    assert SpeechStatistics.fit(x, block=7).mean == pytest.approx(x.mean() / 32768)
    assert SpeechStatistics.fit(x, block=7).std == pytest.approx(x.std() / 32768)


def test_split_by_file_is_seeded_and_disjoint(store):
    split = split_by_file(store)
    again = split_by_file(store, seed=1)
    np.testing.assert_array_equal(split.train, again.train)
    assert len(split.train_files) == 5 and len(split.test_files) == 1
    assert not set(split.train_files) & set(split.test_files)
    rows = np.concatenate([split.train, split.valid])
    assert len(split.valid) == len(rows) - int(len(rows) * 0.95)
    assert not set(rows) & set(split.test)
    assert len(rows) + len(split.test) == len(store)
    other = split_by_file(store, seed=3)
    assert other.test_files != split.test_files or other.train_files != (
        split.train_files
    )


def test_split_from_list_files(store, tmp_path):
    (tmp_path / "train.txt").write_text(
        "arctic_a0007.wav.t7\n# c\n\nJustLikeTheWorld\n"
    )
    (tmp_path / "test.txt").write_text("espeak_en_us_16k.wav.t7\n")
    split = split_from_lists(store, tmp_path / "train.txt", test=tmp_path / "test.txt")
    assert split.train_files == (
        "cmu_arctic/arctic_a0007.wav",
        "librivox_poem/JustLikeTheWorld.flac",
    )
    assert len(split.train) + len(split.valid) == 8 + 18
    assert len(split.test) == 16
    explicit = split_from_lists(
        store, ["cmu_arctic/arctic_a0007.wav"], valid=["JustLikeTheWorld.flac"]
    )
    assert len(explicit.train) == 8 and len(explicit.valid) == 18
    with pytest.raises(DataFormatError, match="not_there"):
        split_from_lists(store, ["not_there.wav.t7"])
    assert len(split_from_lists(store, ["not_there"], missing="ignore").train) == 0
    with pytest.raises(DataFormatError, match="ambiguous"):
        split_from_lists(store, ["linda_johnson_01"])


def test_framing_round_trips(store):
    clips = store[:3]
    for fw in (2, 25, 200):
        t = 8000 // fw
        cont = frame_clips(clips, fw)
        strd = frame_clips(clips, fw, mode="strided")
        assert cont.shape == strd.shape == (3, t, fw)
        np.testing.assert_array_equal(unframe_clips(cont), clips)
        np.testing.assert_array_equal(unframe_clips(strd, mode="strided"), clips)
        # independent definitions of the two layouts
        assert cont[1, 5, fw - 1] == clips[1, 5 * fw + fw - 1]
        assert strd[1, 5, fw - 1] == clips[1, (fw - 1) * t + 5]
        np.testing.assert_array_equal(strd[2].T, clips[2].reshape(fw, t))
    with pytest.raises(ShapeError):
        frame_clips(clips, 3)
    with pytest.raises(ValueError, match="mode"):
        frame_clips(clips, 2, mode="diagonal")


def test_load_blizzard_views_are_lazy(standin, store):
    data = load_blizzard(standin, store.cache_dir, frame_width=25, mode="strided")
    assert data.store.cache_dir == store.cache_dir
    item = data.train[0]
    assert item.shape == (320, 25) and item.dtype == np.float32
    batch = data.valid.take([1, 0])
    np.testing.assert_array_equal(batch[1], data.valid[0])
    assert len(pickle.dumps(data.train)) < 100_000
    restored = pickle.loads(pickle.dumps(data.test))
    np.testing.assert_array_equal(restored[0], data.test[0])
    lit = load_blizzard(standin, store.cache_dir, statistics="literature")
    assert lit.statistics.std == pytest.approx(3117.59 / 32768)


def test_cache_reused_and_refreshed(tmp_path, monkeypatch):
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    _write(audio / "a.wav", rng.uniform(-0.5, 0.5, 20000))
    cache = tmp_path / "cache"
    first = load_speech_clips(audio, cache)
    assert len(first) == 2

    def boom(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(speech, "decode_audio", boom)
    assert len(load_speech_clips(audio, cache)) == 2
    monkeypatch.undo()
    _write(audio / "b.flac", rng.uniform(-0.5, 0.5, 9000))
    assert len(load_speech_clips(audio, cache)) == 3
    assert sorted(p.name for p in cache.iterdir()) == ["clips.npy", "meta.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio", "cache"]


def test_stereo_and_resampling(tmp_path):
    t = np.arange(8000) / 8000
    left, right = 0.5 * np.sin(2 * np.pi * 200 * t), 0.1 * np.ones_like(t)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    x = decode_audio(path)
    assert x.shape == (16000,) and x.dtype == np.int16
    mono = (left + right) / 2
    np.testing.assert_allclose(x[::2][100:-100] / 32768, mono[100:-100], atol=0.02)


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_speech_clips(tmp_path / "nowhere", tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no audio files"):
        load_speech_clips(tmp_path / "empty", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    with pytest.raises(FileNotFoundError, match="meta.json"):
        ClipStore(tmp_path / "empty")


@pytest.mark.parametrize("kind", ["zero_bytes", "no_samples", "garbage", "truncated"])
def test_bad_audio_names_file(tmp_path, kind, standin):
    audio = tmp_path / "audio"
    audio.mkdir()
    _write(audio / "good.wav", np.full(9000, 0.1))
    bad = audio / "bad.wav"
    if kind == "zero_bytes":
        bad.write_bytes(b"")
    elif kind == "no_samples":
        _write(bad, np.zeros(0))
    elif kind == "garbage":
        bad.write_bytes(b"RIFX not audio at all" * 50)
    else:
        bad.write_bytes((standin / "cmu_arctic/arctic_a0007.wav").read_bytes()[:5000])
    cache = tmp_path / "cache"
    with pytest.raises(DataFormatError, match="bad.wav"):
        load_speech_clips(audio, cache)
    assert list(cache.iterdir()) == []
    with pytest.warns(UserWarning, match="bad.wav"):
        store = load_speech_clips(audio, cache, errors="skip")
    assert [f["path"] for f in store.files] == ["good.wav"]


def test_truncated_compressed_audio(tmp_path, standin):
    flac = (standin / "librivox_poem/JustLikeTheWorld.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(flac[: len(flac) // 3])
    with pytest.raises(DataFormatError, match="cut.flac"):
        decode_audio(tmp_path / "cut.flac")
    mp3 = standin / "train/unsegmented/ljspeech_librivox/linda_johnson_01.mp3"
    (tmp_path / "cut.mp3").write_bytes(mp3.read_bytes()[:100_000])
    with pytest.raises(DataFormatError, match="cut.mp3"):
        decode_audio(tmp_path / "cut.mp3")


def test_trim_zeros_and_silence():
    x = np.array([0, 0, 3, 0, -1, 0], dtype=np.int16)
    trimmed, lead, trail = trim_zeros(x)
    np.testing.assert_array_equal(trimmed, [3, 0, -1])
    assert (lead, trail) == (2, 1)
    empty, lead, trail = trim_zeros(np.zeros(4, dtype=np.int16))
    assert empty.size == 0 and lead == 4


def test_npy_appender_round_trip(tmp_path):
    writer = NpyAppender(tmp_path / "x.npy", 3)
    writer.append(np.arange(6).reshape(2, 3))
    writer.append(np.zeros((0, 3)))
    writer.append(np.ones((1, 3)))
    writer.close()
    arr = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert arr.shape == (3, 3) and arr.dtype == np.int16
    np.testing.assert_array_equal(arr[2], [1, 1, 1])
    with pytest.raises(ValueError):
        writer.append(np.ones((1, 3)))
