"""Every bad input fails alone with a one-line reason naming it; odd-but-valid audio works.

All files are made here: bytes written directly, or arrays written with soundfile.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from audioembed import AudioError, TruncatedAudioWarning, embed, extract
from audioembed.cli import main


def _bad_files(tmp_path: Path, make_wav) -> dict[str, tuple[Path, str]]:
    """name -> (file, phrase its failure must contain)."""
    wav = make_wav("_template.wav", seconds=0.5).read_bytes()
    d = tmp_path / "bad"
    d.mkdir()
    cases = {}

    def add(key, name, content, phrase):
        path = d / name
        if content is not None:
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        cases[key] = (path, phrase)

    add("empty file", "empty.wav", b"", "empty file (0 bytes)")
    zero = d / "zero_length.wav"
    sf.write(zero, np.zeros(0, np.float32), 16000)
    cases["zero-length audio"] = (zero, "zero-length audio")
    add("corrupt header", "corrupt.wav", wav[:12] + b"fmt " + b"\x00" * 8, "corrupt or truncated WAV header")
    add("text named .wav", "notes.wav", "title,artist\nsong,band\n", "is a text file, not audio")
    add("unsupported format", "movie.m4a", b"\x00\x00\x00\x20ftypM4A " + bytes(range(256)) * 4,
        "unsupported format (MP4/M4A/AAC)")
    add("unknown extension", "blob.xyz", bytes(range(256)) * 4, "unsupported format '.xyz'")
    nan = np.full(8000, 0.1, np.float32)
    nan[100] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    cases["NaN samples"] = (d / "nan.wav", "NaN or infinite samples")
    inf = np.full(8000, 0.1, np.float32)
    inf[-1] = np.inf
    sf.write(d / "inf.wav", inf, 16000, subtype="FLOAT")
    cases["inf samples"] = (d / "inf.wav", "NaN or infinite samples")
    add("missing path", "does_not_exist.wav", None, "no such file")
    os.symlink(d / "gone.wav", d / "dangling.wav")
    cases["broken symlink"] = (d / "dangling.wav", "broken symbolic link")
    return cases


@pytest.fixture
def bad_files(tmp_path, make_wav):
    return _bad_files(tmp_path, make_wav)


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


def test_a_batch_writes_every_good_file_and_lists_the_bad_ones(bad_files, make_wav, tiny_model_dir, tmp_path):
    goods = [make_wav("in/good1.wav", seconds=0.7, seed=1), make_wav("in/good2.flac", seconds=1.5, seed=2)]
    bads = [p for p, _ in bad_files.values()]
    inputs = [goods[0], *bads, goods[1]]
    res = CliRunner().invoke(main, ["extract", *map(str, inputs), "-o", str(tmp_path / "out"),
                                    "--model", str(tiny_model_dir), "-q"])
    assert res.exit_code == 1
    for g in goods:
        e = np.load(tmp_path / "out" / f"{g.stem}.npy")
        np.testing.assert_allclose(e, embed(g, model=tiny_model_dir), atol=1e-6)
    lines = res.stderr.splitlines()
    assert lines[0] == f"{len(bads)} failed (2 of {len(bads) + 1} inputs embedded):"
    for path, phrase in bad_files.values():
        [line] = [ln for ln in lines if ln.strip().startswith(f"{path}: ")]
        assert phrase in line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good1.npy", "good2.npy"]


def test_all_zero_audio_is_embedded_with_a_warning(make_wav, tiny_model_dir, tmp_path):
    silent = make_wav("silent.wav", np.zeros(16000, np.float32))
    res = CliRunner().invoke(main, ["extract", str(silent), "-o", str(tmp_path / "e.npy"),
                                    "--model", str(tiny_model_dir), "-q"])
    assert res.exit_code == 0
    assert res.stderr == f"warning: {silent}: audio is all zeros; its embedding is that of silence\n"
    e = np.load(tmp_path / "e.npy")
    assert e.shape == (128,) and np.isfinite(e).all()


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


def test_existing_output_fails_that_input_only(make_wav, tiny_model_dir, tmp_path):
    make_wav("in/a.wav", seconds=0.5, seed=1)
    make_wav("in/b.wav", seconds=0.5, seed=2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.npy").write_bytes(b"keep")
    report = extract.run([tmp_path / "in"], tmp_path / "out", model=tiny_model_dir)
    assert report.succeeded == 1
    assert report.failures == [f"{tmp_path / 'out/b.npy'}: exists; pass --overwrite to replace it "
                               f"(input {tmp_path / 'in/b.wav'})"]
    assert (tmp_path / "out" / "b.npy").read_bytes() == b"keep"
    assert np.load(tmp_path / "out" / "a.npy").shape == (128,)


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


def test_six_channels_embed_as_their_mean(make_wav, tiny_model_dir):
    rng = np.random.default_rng(7)
    # Different content per channel, so averaging differs from taking any one channel.
    chans = (0.2 * rng.standard_normal((24000, 6))).astype(np.float32)
    multi = make_wav("six.wav", chans, subtype="FLOAT")
    mono = make_wav("mean.wav", chans.astype(np.float64).mean(1).astype(np.float32), subtype="FLOAT")
    first = make_wav("first.wav", chans[:, 0], subtype="FLOAT")
    e_multi, e_mono, e_first = embed([multi, mono, first], model=tiny_model_dir)
    np.testing.assert_allclose(e_multi, e_mono, atol=1e-5)
    assert np.abs(e_multi - e_first).max() > 1e-3


@pytest.mark.parametrize("channels", [2, 3, 6])
def test_channel_mean_is_the_float64_mean_of_file_blocks(channels):
    from audioembed.audio_io import to_mono

    block = np.random.default_rng(channels).standard_normal((48000, channels)).astype(np.float32)
    expected = block.T.mean(axis=0, dtype=np.float64).astype(np.float32)
    assert np.array_equal(to_mono(block.T), expected)


# --- Round 2 (issue 13): no input can crash, hang or poison a batch. ---


def _tone(sr: int, seconds: float = 1.0, hz: float = 1000.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("sr", [16001, 48001, 384001, 1001, 11111])
def test_odd_rates_resample_in_bounded_memory_and_by_blocks(sr):
    from audioembed import resample as rs
    from audioembed.resample import resample

    # The dense torchaudio filter for these rates is ~new x orig floats (16001 Hz: 1 GB).
    assert not rs.uses_dense_kernel(sr)
    r = rs.make_resampler(sr)
    assert isinstance(r, rs.PhaseResampler)
    assert r.table.numel() * r.table.element_size() < 25e6
    x = _tone(sr, 1.3, hz=200.0)  # below the Nyquist frequency of 1001 Hz
    rng = np.random.default_rng(sr)
    cuts = np.sort(rng.choice(np.arange(1, x.size), 6, replace=False))
    blocks = [r.push(torch.from_numpy(b)) for b in np.split(x, cuts)] + [r.finish()]
    got = torch.cat(blocks)
    assert got.shape[0] == -(-16000 * x.size // sr)  # ceil(16 kHz * duration)
    assert torch.equal(got, resample(x, sr))  # the same numbers however the input is cut
    # The tone keeps its frequency and level: compare with the same tone made at 16 kHz,
    # away from the edges (where both filters see the zero padding).
    want = torch.from_numpy(_tone(16000, 1.3, hz=200.0))
    torch.testing.assert_close(got[400:-400], want[400:got.shape[0] - 400], atol=2e-3, rtol=0)


@pytest.mark.parametrize("sr", [8000, 11025, 22050, 44100, 96000])
def test_phase_resampler_is_torchaudios_filter(sr):
    import torchaudio.functional as AF

    from audioembed import resample as rs

    # The common rates use torchaudio's own filter matrix (see test_streaming); the
    # phase table is the same formula, checked against torchaudio in float64.
    assert rs.uses_dense_kernel(sr)
    x = (0.2 * np.random.default_rng(sr).standard_normal(sr + 17)).astype(np.float32)
    r = rs.PhaseResampler(sr)
    got = torch.cat([r.push(torch.from_numpy(x)), r.finish()])
    want = AF.resample(torch.from_numpy(x.astype(np.float64)), sr, 16000, lowpass_filter_width=6,
                       rolloff=0.99, resampling_method="sinc_interp_hann")
    assert got.shape == want.shape
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=0)


def test_odd_rate_files_embed_like_16k(make_wav, tiny_model_dir, tmp_path, one_thread):
    ref = make_wav("ref.wav", _tone(16000, 2.0), sr=16000, subtype="FLOAT")
    odd = [make_wav(f"r{sr}.wav", _tone(sr, 2.0), sr=sr, subtype="FLOAT") for sr in (16001, 48001)]
    report = extract.run([ref, *odd], tmp_path / "out", model=tiny_model_dir)
    assert report.failures == [] and report.succeeded == 3
    e_ref = np.load(tmp_path / "out/ref.npy")
    for path in odd:
        assert float(np.load(tmp_path / "out" / f"{path.stem}.npy") @ e_ref) > 0.999


def test_rates_below_1khz_are_refused(make_wav, tiny_model_dir, tmp_path):
    slow = make_wav("slow.wav", sr=800, seconds=2.0)
    report = extract.run([slow], tmp_path / "e.npy", model=tiny_model_dir)
    [reason] = report.failures
    assert reason.startswith(f"{slow}: sample rate 800 Hz is below 1000 Hz")
    with pytest.raises(AudioError, match="below 1000 Hz"):
        embed(np.zeros(800, np.float32), sr=800, model=tiny_model_dir)


def test_an_unexpected_error_fails_that_input_only(make_wav, tiny_model_dir, tmp_path, monkeypatch):
    from audioembed import streaming

    files = [make_wav(f"d/{k}.wav", seconds=0.5, seed=i) for i, k in enumerate("abc")]
    real_update = streaming.SampleChecker.update

    def update(self, block):
        if self.name.endswith("b.wav"):
            raise RuntimeError("simulated bug\nsecond line")
        real_update(self, block)

    monkeypatch.setattr(streaming.SampleChecker, "update", update)
    for workers in (0, 1):
        out = tmp_path / f"out{workers}"
        report = extract.run(files, out, model=tiny_model_dir, workers=workers)
        assert report.failures == [f"{files[1]}: failed with RuntimeError: simulated bug second line"]
        assert sorted(p.name for p in out.iterdir()) == ["a.npy", "c.npy"]

    def interrupt(self, block):
        raise KeyboardInterrupt

    monkeypatch.setattr(streaming.SampleChecker, "update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        extract.run(files, tmp_path / "out_int", model=tiny_model_dir)


def test_huge_finite_samples_fail_instead_of_a_nan_embedding(make_wav, tiny_model_dir, tmp_path):
    from audioembed import hear
    from audioembed.loading import load_model

    huge = (4e18 * _tone(16000, 1.5) / 0.3).astype(np.float32)
    assert np.isfinite(huge).all()
    path = make_wav("huge.wav", huge, subtype="FLOAT")
    good = make_wav("good.wav", seconds=1.0)
    report = extract.run([path, good], tmp_path / "out", model=tiny_model_dir)
    [reason] = report.failures
    assert reason.startswith(f"{path}: its embedding is not finite") and "peak 4e+18" in reason
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.npy"]
    with pytest.raises(AudioError, match="not finite"):
        embed(huge, sr=16000, model=tiny_model_dir)
    model = hear.HearModel(load_model(tiny_model_dir))
    batch = torch.stack([torch.from_numpy(_tone(16000, 1.5)), torch.from_numpy(huge)])
    for fn in (hear.get_scene_embeddings, hear.get_timestamp_embeddings):
        with pytest.raises(ValueError, match=r"sounds \[1\] are not finite"):
            fn(batch, model)


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


def test_dev_stdin_is_still_read_as_a_stream(make_wav, tiny_model_dir, tmp_path):
    import subprocess
    import sys

    wav = make_wav("in.wav", seconds=1.5)
    out = tmp_path / "e.npy"
    with open(wav, "rb") as stdin:
        res = subprocess.run([sys.executable, "-m", "audioembed", "extract", "/dev/stdin", "-o", str(out),
                              "--model", str(tiny_model_dir), "-q"], stdin=stdin, capture_output=True,
                             text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert res.returncode == 0, res.stderr
    np.testing.assert_allclose(np.load(out), embed(wav, model=tiny_model_dir), atol=1e-6)


def test_non_utf8_file_names_are_embedded(make_wav, tiny_model_dir, tmp_path):
    src = make_wav("d/plain.wav", seconds=0.8)
    raw = os.fsencode(tmp_path / "d") + b"/caf\xe9.wav"
    os.rename(src, raw)
    bad_raw = os.fsencode(tmp_path / "d") + b"/bad\xff.wav"
    with open(bad_raw, "wb") as f:
        f.write(b"not audio at all, just text\n")
    res = CliRunner().invoke(main, ["extract", str(tmp_path / "d"), "-o", str(tmp_path / "out"),
                                    "--model", str(tiny_model_dir), "-q"])
    assert res.exit_code == 1
    out = os.fsencode(tmp_path / "out") + b"/caf\xe9.npy"
    assert os.path.exists(out)
    np.testing.assert_allclose(np.load(out), embed(os.fsdecode(raw), model=tiny_model_dir), atol=1e-6)
    # Printed with the undecodable byte escaped, and for the right reason.
    assert f"{tmp_path / 'd'}/bad\\xff.wav: is a text file, not audio" in res.stderr
    report = extract.run([os.fsdecode(raw)], tmp_path / "all.npz", model=tiny_model_dir)
    assert report.failures == []
    assert os.fsencode(str(np.load(tmp_path / "all.npz")["names"][0])) == raw


def test_longest_legal_file_names_are_written(make_wav, tiny_model_dir, tmp_path):
    name = "n" * 251 + ".wav"  # 255 bytes, the most a file name may hold; its output is too
    wav = make_wav(f"d/{name}", seconds=0.5)
    report = extract.run([wav], tmp_path / "out", model=tiny_model_dir)
    assert report.failures == [] and (tmp_path / "out" / ("n" * 251 + ".npy")).exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["n" * 251 + ".npy"]
    report = extract.run([wav], tmp_path / "win", model=tiny_model_dir, windows=True)
    [reason] = report.failures  # STEM.windows.npy cannot exist: said before any work
    assert "would be 263 bytes, more than a file name may hold (255)" in reason


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
    res = CliRunner().invoke(main, ["extract", str(cut), "-o", str(tmp_path / "e.npy"),
                                    "--model", str(tiny_model_dir), "-q"])
    assert res.exit_code == 0, res.output
    assert res.stderr.startswith(f"warning: {cut}: truncated: {phrase}")
    assert np.load(tmp_path / "e.npy").shape == (128,)
    with pytest.warns(TruncatedAudioWarning, match="truncated"):
        embed(cut, model=tiny_model_dir)
    strict = CliRunner().invoke(main, ["extract", str(cut), "-o", str(tmp_path / "s.npy"),
                                       "--model", str(tiny_model_dir), "-q", "--strict"])
    assert strict.exit_code == 1 and "(--strict)" in strict.stderr and phrase in strict.stderr
    assert not (tmp_path / "s.npy").exists()
    # The whole file says nothing.
    assert extract.run([whole], tmp_path / "w.npy", model=tiny_model_dir).warnings == []


def test_strict_fails_all_zero_audio(make_wav, tiny_model_dir, tmp_path):
    silent = make_wav("silent.wav", np.zeros(16000, np.float32))
    report = extract.run([silent], tmp_path / "e.npy", model=tiny_model_dir, strict=True)
    assert report.failures == [f"{silent}: audio is all zeros; its embedding is that of silence (--strict)"]
    assert not (tmp_path / "e.npy").exists()


def test_an_unwritable_output_is_a_usage_error_before_any_work(make_wav, tiny_model_dir, tmp_path):
    wav = make_wav("a.wav", seconds=0.5)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in [blocker / "out", blocker / "e.npy", Path("/proc/audioembed-no-such/out")]:
        res = CliRunner().invoke(main, ["extract", str(wav), "-o", str(out), "--model", "/nonexistent"])
        # Exit 2 from the output check: the (missing) model is never reached.
        assert res.exit_code == 2 and "--model" not in res.output, res.output
        assert f"-o {out}: " in res.output and ".tmp" not in res.output
    res = CliRunner().invoke(main, ["extract", str(wav), "-o", "", "--model", str(tiny_model_dir)])
    assert res.exit_code == 2 and "output path is empty" in res.output
    assert not (Path.cwd() / "a.npy").exists()


def test_a_failed_write_names_the_real_file(make_wav, tiny_model_dir, tmp_path):
    wav = make_wav("a.wav", seconds=0.5)
    (tmp_path / "out" / "a.npy" / "occupied").mkdir(parents=True)  # a folder where a.npy goes
    report = extract.run([wav], tmp_path / "out", model=tiny_model_dir, overwrite=True)
    [reason] = report.failures
    assert reason.startswith(f"{wav}: cannot write {tmp_path / 'out' / 'a.npy'}: ")
    assert ".tmp" not in reason
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npy"]  # no temp left


def test_an_archive_that_cannot_be_written_is_rescued(make_wav, tiny_model_dir, tmp_path, monkeypatch):
    from audioembed import outputs

    wavs = [make_wav(f"d/{k}.wav", seconds=0.5, seed=i) for i, k in enumerate("ab")]
    target = tmp_path / "all.npz"
    real_atomic_write = outputs.atomic_write

    def disk_full_at_target(path, write, fsync=False, **kwargs):
        if Path(path) == target:
            raise OSError(28, "No space left on device", str(path))
        real_atomic_write(path, write, fsync, **kwargs)

    monkeypatch.setattr(outputs, "atomic_write", disk_full_at_target)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "rescue"))
    (tmp_path / "rescue").mkdir()
    report = extract.run([tmp_path / "d"], target, model=tiny_model_dir)
    [reason] = report.failures
    rescued = tmp_path / "rescue" / f"all.rescued-{os.getpid()}.npz"
    assert reason == (f"{target}: cannot write: No space left on device; the 2 embeddings were "
                      f"saved to {rescued} instead")
    z = np.load(rescued)
    assert z["names"].tolist() == [str(w) for w in wavs]
    np.testing.assert_allclose(z["embeddings"], embed(wavs, model=tiny_model_dir), atol=1e-6)


def _interrupt_on(monkeypatch, name_suffix: str, action):
    """Run ``action`` when the frontend starts reading the input whose name ends so."""
    from audioembed import streaming

    real_update = streaming.SampleChecker.update

    def update(self, block):
        if self.name.endswith(name_suffix) and self.count == 0:
            action()
        real_update(self, block)

    monkeypatch.setattr(streaming.SampleChecker, "update", update)


@pytest.mark.parametrize("how,code", [("ctrl-c", 130), ("sigterm", 143)])
def test_interrupted_runs_exit_130_or_143_and_leave_no_partial_files(how, code, make_wav, tiny_model_dir,
                                                                      tmp_path, monkeypatch):
    import signal

    for i, k in enumerate("abc"):
        make_wav(f"d/{k}.wav", seconds=0.5, seed=i)

    def interrupt():
        if how == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the handler the command installs

    _interrupt_on(monkeypatch, "c.wav", interrupt)
    before = signal.getsignal(signal.SIGTERM)
    args = ["extract", str(tmp_path / "d"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir),
            "-q", "--workers", "0", "--batch-size", "1"]  # a and b are written before c is read
    res = CliRunner().invoke(main, args)
    assert res.exit_code == code, res.output
    assert signal.getsignal(signal.SIGTERM) == before
    assert ("terminated (SIGTERM)" if how == "sigterm" else "interrupted (Ctrl-C)") in res.stderr
    # Inputs before the interrupt are written whole; nothing partial or temporary is left.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npy", "b.npy"]
    monkeypatch.undo()
    resumed = CliRunner().invoke(main, [*args, "--skip-existing"])
    assert resumed.exit_code == 0, resumed.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npy", "b.npy", "c.npy"]


def test_skip_existing_resumes_only_missing_or_incomplete_outputs(make_wav, tiny_model_dir, tmp_path):
    wavs = [make_wav(f"d/{k}.wav", seconds=0.5, seed=i) for i, k in enumerate("abcd")]
    out = tmp_path / "out"
    assert extract.run([tmp_path / "d"], out, model=tiny_model_dir, windows=True).succeeded == 4
    (out / "b.npy").unlink()  # interrupted before the input's last file
    (out / "c.npy").write_bytes((out / "c.npy").read_bytes()[:-8])  # not a whole .npy
    mtime_a = (out / "a.npy").stat().st_mtime_ns
    report = extract.run([tmp_path / "d"], out, model=tiny_model_dir, windows=True, skip_existing=True)
    assert (report.succeeded, report.skipped, report.failures) == (2, 2, [])
    assert (out / "a.npy").stat().st_mtime_ns == mtime_a
    for w in wavs:
        np.testing.assert_allclose(np.load(out / f"{w.stem}.npy"), embed(w, model=tiny_model_dir), atol=1e-6)
    with pytest.raises(extract.UsageError, match="contradict"):
        extract.run([tmp_path / "d"], out, model=tiny_model_dir, skip_existing=True, overwrite=True)
    with pytest.raises(extract.UsageError, match="npy outputs"):
        extract.run([tmp_path / "d"], tmp_path / "e.npz", model=tiny_model_dir, skip_existing=True)


def test_stale_temp_files_of_killed_runs_are_removed(make_wav, tiny_model_dir, tmp_path):
    import subprocess
    import sys
    import time

    from audioembed import outputs

    wav = make_wav("d/a.wav", seconds=0.5)
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    host = outputs._host_tag()
    stale = out / f".audioembed-{host}-{dead_pid}-0123abcd.tmp"  # its process is gone
    live = out / f".audioembed-{host}-{os.getpid()}-0123abcd.tmp"  # a live process's write
    old_style = out / ".x.npy.89abcdef.tmp"  # the long names of earlier versions, long untouched
    recent_old_style = out / ".y.npy.89abcdef.tmp"
    user_file = out / ".notes.tmp"  # not ours
    for p in (stale, live, old_style, recent_old_style, user_file):
        p.write_bytes(b"partial")
    long_ago = time.time() - 2 * outputs.STALE_SECONDS
    os.utime(old_style, (long_ago, long_ago))
    report = extract.run([wav], out, model=tiny_model_dir)
    assert report.failures == []
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["a.npy", live.name, recent_old_style.name, user_file.name])
    assert report.notes == [f"removed 2 temporary files left by an interrupted run in {out}"]


def test_antiphase_stereo_says_the_downmix_cancels(make_wav, tiny_model_dir, tmp_path):
    left = (0.1 * np.random.default_rng(3).standard_normal(16000)).astype(np.float32)
    wav = make_wav("anti.wav", np.stack([left, -left], axis=1), subtype="FLOAT")
    report = extract.run([wav], tmp_path / "e.npy", model=tiny_model_dir)
    assert report.warnings == [f"{wav}: its channels cancel when averaged to mono (e.g. stereo in "
                               "antiphase), leaving all zeros; its embedding is that of silence"]
    with pytest.warns(UserWarning, match="channels cancel"):
        embed(np.stack([left, -left]), sr=16000, model=tiny_model_dir)


def test_symlink_loop_is_not_called_broken(tiny_model_dir, tmp_path):
    os.symlink(tmp_path / "loop_b.wav", tmp_path / "loop_a.wav")
    os.symlink(tmp_path / "loop_a.wav", tmp_path / "loop_b.wav")
    report = extract.run([tmp_path / "loop_a.wav"], tmp_path / "e.npy", model=tiny_model_dir)
    assert report.failures == [f"{tmp_path / 'loop_a.wav'}: symbolic link loop (the link points, in "
                               "the end, back to itself)"]


def test_folder_scans_count_the_files_they_skip(make_wav, tiny_model_dir, tmp_path):
    make_wav("d/a.wav", seconds=0.5)
    for name in ["x.m4a", "y.m4a", "notes.txt", "README"]:
        (tmp_path / "d" / name).write_bytes(b"x")
    res = CliRunner().invoke(main, ["extract", str(tmp_path / "d"), "-o", str(tmp_path / "out"),
                                    "--model", str(tiny_model_dir)])
    assert res.exit_code == 0
    assert ("note: skipped 4 files without an audio extension in the folders searched (.m4a 2, "
            "(no extension) 1, .txt 1); name a file explicitly to try it anyway") in res.stderr


def test_a_missing_named_input_does_not_say_0_of_0(tiny_model_dir, tmp_path):
    res = CliRunner().invoke(main, ["extract", str(tmp_path / "gone.wav"), "-o", str(tmp_path / "e.npy"),
                                    "--model", str(tiny_model_dir)])
    assert res.exit_code == 1
    assert res.stderr.splitlines()[0] == "1 failed (no audio inputs found):"
    assert "0 of 0" not in res.stderr


def test_a_huge_batch_size_does_not_queue_a_long_file(tiny_model_dir):
    from audioembed import api
    from audioembed.loading import load_model

    net = load_model(tiny_model_dir)
    sizes = []

    def model(windows):
        sizes.append(windows.shape[0])
        return api.embed_windows(net, windows)

    x = (0.1 * np.random.default_rng(0).standard_normal(16000 * 60)).astype(np.float32)
    features = api.iter_features([x], 16000, hop_seconds=0.24)  # 248 windows of 0.96 s, hop 0.24 s
    monkey_cap = api.MAX_QUEUED_WINDOWS
    try:
        api.MAX_QUEUED_WINDOWS = 100
        [res] = list(api.iter_embeddings(features, model, batch_size=10**6))
    finally:
        api.MAX_QUEUED_WINDOWS = monkey_cap
    assert sizes == [100, 100, 48] and res.window_embeddings.shape[0] == 248
    np.testing.assert_allclose(res.embedding, embed(x, sr=16000, hop=0.24, model=net), atol=1e-5)
