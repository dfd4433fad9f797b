"""Decoding: integer PCM read natively and scaled here equals libsndfile's float conversion;
every bad input fails alone with a one-line reason naming it (empty, corrupt, not audio, NaN,
missing, unreadable, a FIFO); odd-but-valid audio works; truncated and damaged files warn and
embed what is there (or fail under --strict).

All files are made here: bytes written directly, or arrays written with soundfile.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioembed import AudioError, TruncatedAudioWarning, embed, extract
from audioembed.audio_io import AudioSource, load_waveform, to_mono
from helpers_cli import cli


def _write(path, subtype, fmt, channels, rng):
    x = rng.uniform(-1, 1, size=(9_001, channels)).astype(np.float32)
    x[:2] = [[-1.0] * channels, [1.0] * channels]  # the integer extremes
    sf.write(path, x, 22_050, subtype=subtype, format=fmt)
    with sf.SoundFile(path) as f:
        return to_mono(f.read(dtype="float32", always_2d=True).T)


@pytest.mark.parametrize("subtype,fmt", [("PCM_16", "WAV"), ("PCM_16", "FLAC"), ("PCM_16", "AIFF"),
                                         ("PCM_16", "W64"), ("PCM_32", "WAV"), ("PCM_24", "WAV"),
                                         ("FLOAT", "WAV")])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_blocks_equal_libsndfile_float_conversion_to_the_bit(tmp_path, subtype, fmt, channels):
    path = tmp_path / f"x.{fmt.lower()}"
    expected = _write(path, subtype, fmt, channels, np.random.default_rng(channels))
    for frames in (-1, 1_000, 4_096):
        with AudioSource(path) as src:
            blocks = list(src.blocks(frames))
        assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
        got = np.concatenate(blocks)
        assert np.array_equal(got, expected), (subtype, fmt, channels, frames)
    assert expected.min() == -1.0  # the most negative integer maps to -1 exactly


def test_native_read_keeps_cancelled_channels_distinct_from_silence(tmp_path):
    x = np.zeros((4_000, 2), np.float32)
    x[:, 0], x[:, 1] = 0.25, -0.25
    sf.write(tmp_path / "anti.wav", x, 16_000, subtype="PCM_16")
    with AudioSource(tmp_path / "anti.wav") as src:
        mono = np.concatenate(list(src.blocks(1_000)))
    assert not mono.any() and src.channels_nonzero


@pytest.mark.parametrize("case", ["empty file", "zero-length audio", "corrupt header", "text named .wav",
                                  "unsupported format", "unknown extension", "NaN samples",
                                  "inf samples", "missing path", "broken symlink"])
def test_each_bad_input_fails_with_a_one_line_reason(case, bad_files, tiny_model_dir, tmp_path):
    path, phrase = bad_files[case]
    report = extract.run([path], tmp_path / "e.npy", model=tiny_model_dir)
    assert report.succeeded == 0 and report.exit_code == 1
    [reason] = report.failures
    assert reason.startswith(f"{path}: ") and phrase in reason and "\n" not in reason
    assert not (tmp_path / "e.npy").exists()


@pytest.mark.parametrize("subtype,sr,channels", [
    ("PCM_U8", 16000, 1), ("PCM_24", 16000, 1), ("FLOAT", 16000, 1), ("PCM_16", 16000, 6),
    ("PCM_16", 8000, 1), ("PCM_16", 96000, 2),
])
def test_unusual_but_valid_audio_works(subtype, sr, channels, make_wav, tiny_model_dir, tmp_path):
    wav = make_wav(f"x_{subtype}_{sr}_{channels}.wav", sr=sr, seconds=1.2, channels=channels,
                   subtype=subtype)
    assert sf.info(str(wav)).subtype == subtype and sf.info(str(wav)).channels == channels
    report = extract.run([wav], tmp_path / "e.npy", model=tiny_model_dir)
    assert report.failures == [] and report.succeeded == 1
    e = np.load(tmp_path / "e.npy")
    assert e.shape == (128,) and np.isfinite(e).all()
    np.testing.assert_allclose(np.linalg.norm(e), 1.0, atol=1e-4)


@pytest.mark.parametrize("channels", [2, 3, 6])
def test_channel_mean_is_the_float64_mean_of_file_blocks(channels):
    from audioembed.audio_io import to_mono

    block = np.random.default_rng(channels).standard_normal((48000, channels)).astype(np.float32)
    expected = block.T.mean(axis=0, dtype=np.float64).astype(np.float32)
    assert np.array_equal(to_mono(block.T), expected)


def test_antiphase_stereo_says_the_downmix_cancels(make_wav, tiny_model_dir, tmp_path):
    left = (0.1 * np.random.default_rng(3).standard_normal(16000)).astype(np.float32)
    wav = make_wav("anti.wav", np.stack([left, -left], axis=1), subtype="FLOAT")
    report = extract.run([wav], tmp_path / "e.npy", model=tiny_model_dir)
    assert report.warnings == [f"{wav}: its channels cancel when averaged to mono (e.g. stereo in "
                               "antiphase), leaving all zeros; its embedding is that of silence"]
    with pytest.warns(UserWarning, match="channels cancel"):
        embed(np.stack([left, -left]), sr=16000, model=tiny_model_dir)


def test_all_zero_audio_is_embedded_with_a_warning(make_wav, tiny_model_dir, tmp_path):
    silent = make_wav("silent.wav", np.zeros(16000, np.float32))
    res = cli("extract", silent, "-o", tmp_path / "e.npy", "--model", tiny_model_dir, "-q")
    assert res.exit_code == 0
    assert res.stderr == f"warning: {silent}: audio is all zeros; its embedding is that of silence\n"
    e = np.load(tmp_path / "e.npy")
    assert e.shape == (128,) and np.isfinite(e).all()


def test_strict_fails_all_zero_audio(make_wav, tiny_model_dir, tmp_path):
    silent = make_wav("silent.wav", np.zeros(16000, np.float32))
    report = extract.run([silent], tmp_path / "e.npy", model=tiny_model_dir, strict=True)
    assert report.failures == [f"{silent}: audio is all zeros; its embedding is that of silence (--strict)"]
    assert not (tmp_path / "e.npy").exists()


def _truncated_copy(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    cut = path.with_name(f"cut_{path.name}")
    cut.write_bytes(data[:int(len(data) * fraction)])
    return cut


@pytest.mark.parametrize("ext,fraction,phrase", [
    ("wav", 0.5, "the header declares 32000 frames (2.00 s) but the file holds 15989 (1.00 s)"),
    ("ogg", 0.97, "the Ogg stream ends without its final page"),
    ("opus", 0.9, "the Ogg stream ends without its final page"),
    ("mp3", 0.5, "the header declares 32000 frames (2.00 s) but the file holds"),
])
def test_truncated_files_warn_and_embed_what_is_there(ext, fraction, phrase, make_wav, tiny_model_dir,
                                                       tmp_path):
    whole = tmp_path / f"whole.{ext}"
    noise = (0.1 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32)
    sf.write(whole, noise, 16000, **({"format": "OGG", "subtype": "OPUS"} if ext == "opus" else {}))
    cut = _truncated_copy(whole, fraction)
    res = cli("extract", cut, "-o", tmp_path / "e.npy", "--model", tiny_model_dir, "-q")
    assert res.exit_code == 0, res.output
    assert res.stderr.startswith(f"warning: {cut}: truncated: {phrase}")
    assert np.load(tmp_path / "e.npy").shape == (128,)
    with pytest.warns(TruncatedAudioWarning, match="truncated"):
        embed(cut, model=tiny_model_dir)
    strict = cli("extract", cut, "-o", tmp_path / "s.npy", "--model", tiny_model_dir, "-q", "--strict")
    assert strict.exit_code == 1 and "(--strict)" in strict.stderr and phrase in strict.stderr
    assert not (tmp_path / "s.npy").exists()
    # The whole file says nothing.
    assert extract.run([whole], tmp_path / "w.npy", model=tiny_model_dir).warnings == []


def _ogg(path, seconds=3.0, sr=16000) -> bytes:
    x = (0.1 * np.random.default_rng(0).standard_normal(int(sr * seconds))).astype(np.float32)
    sf.write(path, x, sr)
    return path.read_bytes()


def _warnings_of(path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_waveform(path)
    return [str(w.message) for w in caught if issubclass(w.category, TruncatedAudioWarning)]


def test_damaged_ogg_is_called_corrupt_and_a_cut_one_truncated(tmp_path):
    data = _ogg(tmp_path / "ok.ogg")
    pages = [m.start() for m in re.finditer(b"OggS", data)]
    assert len(pages) >= 4 and _warnings_of(tmp_path / "ok.ogg") == []
    cases = {
        "last_header.ogg": data[:pages[-1]] + b"XXXX" + data[pages[-1] + 4:],
        "middle_zeroed.ogg": data[:pages[2] + 40] + bytes(1500) + data[pages[2] + 1540:],
        "last_body.ogg": data[:pages[-1] + 40] + bytes(200) + data[pages[-1] + 240:],
    }
    for name, damaged in cases.items():
        (tmp_path / name).write_bytes(damaged)
        got = _warnings_of(tmp_path / name)
        assert len(got) == 1 and ": corrupt:" in got[0] and "truncated" not in got[0], (name, got)
        assert "could be decoded" in got[0]
    (tmp_path / "cut.ogg").write_bytes(data[:len(data) // 2])
    got = _warnings_of(tmp_path / "cut.ogg")
    assert len(got) == 1 and "truncated: the Ogg stream ends without its final page" in got[0]
    # Bytes after the stream's last page (a tag, padding) hide no audio.
    (tmp_path / "tagged.ogg").write_bytes(data + b"TAG" + bytes(500))
    assert _warnings_of(tmp_path / "tagged.ogg") == []


@pytest.mark.usefixtures("one_thread")  # many small forward passes
def test_damaged_ogg_fails_under_strict_with_its_reason(tmp_path, tiny_model_dir):
    data = _ogg(tmp_path / "ok.ogg")
    pages = [m.start() for m in re.finditer(b"OggS", data)]
    (tmp_path / "bad.ogg").write_bytes(data[:pages[-1]] + b"XXXX" + data[pages[-1] + 4:])
    res = cli("extract", tmp_path / "bad.ogg", "-o", tmp_path / "e.npy", "--model", tiny_model_dir,
              "--strict", "-q", "--workers", "0")
    assert res.exit_code == 1 and "corrupt: damaged Ogg data at byte" in res.stderr, res.output


@pytest.mark.usefixtures("one_thread")
def test_a_cut_flac_keeps_the_audio_before_the_cut_as_wav_and_ogg_do(tmp_path, tiny_model_dir):
    x = (0.1 * np.random.default_rng(1).standard_normal(16000 * 4)).astype(np.float32)
    sf.write(tmp_path / "whole.flac", x, 16000)
    data = (tmp_path / "whole.flac").read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[:len(data) // 2])
    [message] = _warnings_of(cut)
    assert message.startswith(f"{cut}: truncated or corrupt FLAC: decoding stopped after ")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedAudioWarning)
        part = load_waveform(cut).numpy()
    assert 0.5 * 16000 < len(part) < 2 * 16000
    np.testing.assert_allclose(part, x[:len(part)], atol=1e-4)  # the audio before the cut
    report = extract.run([cut], tmp_path / "out.npy", model=tiny_model_dir)
    assert not report.failures and (tmp_path / "out.npy").is_file()
    strict = extract.run([cut], tmp_path / "strict.npy", model=tiny_model_dir, strict=True)
    [reason] = strict.failures
    assert "truncated or corrupt FLAC" in reason
    assert _warnings_of(tmp_path / "whole.flac") == []


def test_unreadable_path(make_wav, tiny_model_dir, tmp_path, monkeypatch):
    locked = make_wav("locked.wav", seconds=0.5)
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):  # root reads anything: make the check see a denial
            real_access = os.access
            monkeypatch.setattr(os, "access", lambda p, m, **kw: False if Path(p) == locked
                                else real_access(p, m, **kw))
            monkeypatch.setattr(sf, "SoundFile", _refuse(locked, sf.SoundFile))
        report = extract.run([locked], tmp_path / "e.npy", model=tiny_model_dir)
    finally:
        locked.chmod(0o644)
    assert report.failures == [f"{locked}: permission denied"]

    not_a_dir = make_wav("plain.wav", seconds=0.5)
    report = extract.run([f"{not_a_dir}/inner.wav"], tmp_path / "f.npy", model=tiny_model_dir)
    assert report.failures == [f"{not_a_dir}/inner.wav: no such file or folder"]


def _refuse(path: Path, real):
    def open_(file, *args, **kwargs):
        if Path(file) == path:
            raise sf.LibsndfileError(2, prefix=f"Error opening {str(file)!r}: ")
        return real(file, *args, **kwargs)
    return open_


def _run_with_deadline(seconds: float, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a thread; fail (rather than hang the suite) if it blocks."""
    import threading

    box = {}

    def target():
        try:
            box["out"] = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__} still running after {seconds} s: it hangs"
    if "error" in box:
        raise box["error"]
    return box["out"]


def test_a_fifo_is_refused_not_waited_on(make_wav, tiny_model_dir, tmp_path):
    good = make_wav("d/good.wav", seconds=0.5)
    fifo = tmp_path / "d" / "pipe.wav"
    os.mkfifo(fifo)
    report = _run_with_deadline(120, extract.run, [tmp_path / "d"], tmp_path / "out", model=tiny_model_dir)
    assert report.failures == [f"{fifo}: is a FIFO (named pipe), not a regular file; skipped"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.npy"]
    report = _run_with_deadline(120, extract.run, [good, fifo], tmp_path / "out2", model=tiny_model_dir)
    [reason] = report.failures
    assert reason.startswith(f"{fifo}: is a FIFO (named pipe), not a regular file")
    with pytest.raises(AudioError, match="FIFO"):
        _run_with_deadline(120, embed, fifo, model=tiny_model_dir)
