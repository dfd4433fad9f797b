"""Block-wise reading, resampling and framing give the whole-signal numbers; odd sample rates
resample in bounded memory with torchaudio's filter, and rates below 1 kHz are refused."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from audioembed import AudioError, embed, extract, frontend, streaming
from audioembed.resample import BlockResampler, resample
from audioembed.api import collect_features, iter_embeddings, iter_features
from audioembed.audio_io import AudioSource, load_waveform
from helpers_hub import tiny_model


def random_blocks(x: np.ndarray, rng: np.random.Generator, most: int):
    """``x`` cut at random places, with some one-sample blocks."""
    i = 0
    while i < len(x):
        k = 1 if rng.random() < 0.1 else int(rng.integers(1, most))
        yield x[i:i + k]
        i += k


@pytest.mark.parametrize("last_to_finish", [False, True])
@pytest.mark.parametrize("sr", [44100, 48000, 22050, 11025, 8000, 96000, 16000, 7])
def test_block_resampler_equals_torchaudio(sr, last_to_finish):
    # last_to_finish: the last block goes to finish() with the end, as LogMelStream gives it.
    rng = np.random.default_rng(sr)
    x = (0.2 * rng.standard_normal(3 * sr + 17)).astype(np.float32)
    r = BlockResampler(sr)
    blocks = [torch.from_numpy(b) for b in random_blocks(x, rng, sr // 2 + 2)]
    last = blocks.pop() if last_to_finish else None
    got = torch.cat([r.push(b) for b in blocks] + [r.finish(last)])
    want = AF.resample(torch.from_numpy(x), sr, frontend.SAMPLE_RATE, lowpass_filter_width=6,
                       rolloff=0.99, resampling_method="sinc_interp_hann")
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # The whole-signal path is the same resampler on one block: equal to the bit.
    assert torch.equal(got, resample(x, sr))


@pytest.mark.parametrize("sr", [44100, 48000, 22050, 11025, 8000, 24000])
def test_banded_filter_keeps_every_tap_that_counts(sr):
    from audioembed import resample as rs

    dense = rs._grouped_kernel(sr)
    bands, stride, reach = rs._banded_kernel(sr)
    n_bands, band, cols = bands.shape
    rebuilt = torch.zeros(reach, dense.shape[1])
    for b in range(n_bands):
        rebuilt[b * stride:b * stride + band, b * cols:(b + 1) * cols] = bands[b]
    # Every tap torchaudio's window does not clamp is in its band, with its value; only the
    # clamped ones (~1e-24) are left out, and nothing lies past torchaudio's taps.
    kept = dense.abs() > rs.NEGLIGIBLE_TAP
    assert torch.equal(rebuilt[:dense.shape[0]][kept], dense[kept])
    assert not rebuilt[:dense.shape[0]][~kept].any() and not rebuilt[dense.shape[0]:].any()
    assert (dense[~kept].abs() < 1e-20).all()
    if sr == 44100:  # the common case does a sixth of the dense product's work
        assert bands.numel() < 0.17 * dense.numel()


@pytest.mark.parametrize("sr", [48000, 8000, 24000])
def test_grouped_filter_is_the_filter_shifted_per_group(sr):
    from audioembed import resample as rs

    kernel, _ = rs._resample_kernel(sr)
    grouped = rs._grouped_kernel(sr)
    m, (orig, new) = rs.groups_per_product_row(sr), rs._reduced(sr)
    assert m > 1 and grouped.shape == (kernel.shape[0] + (m - 1) * orig, m * new)
    for i in range(m):
        column = grouped[:, i * new:(i + 1) * new]
        assert torch.equal(column[i * orig:i * orig + kernel.shape[0]], kernel)
        rest = column.clone()
        rest[i * orig:i * orig + kernel.shape[0]] = 0
        assert not rest.any()  # zeros outside its rows


@pytest.mark.parametrize("last_to_finish", [False, True])
@pytest.mark.parametrize("hop", [1, 48, 50, 96, 100, 150])
def test_window_stream_follows_window_starts(hop, last_to_finish):
    # last_to_finish: the last block goes to finish() with the end, as LogMelStream gives it.
    rng = np.random.default_rng(hop)
    for n in [1, 47, 95, 96, 97, 143, 144, 145, 191, 192, 193, 240, 300, 401]:
        energies = torch.rand(n, frontend.N_MELS)
        ws = streaming.WindowStream(hop)
        parts, starts, i = [], [], 0
        while True:
            k = int(rng.integers(1, 40))
            if last_to_finish and i + k >= n:
                break
            w, s = ws.push(energies[i:i + k])
            parts.append(w)
            starts += s
            i += k
            if i >= n:
                break
        w, s = ws.finish(energies[i:] if last_to_finish else None)
        want, want_starts = frontend.frame_windows(energies, hop)
        assert starts + s == want_starts, n
        assert torch.equal(torch.cat(parts + [w]), frontend.log_mel(want))


@pytest.mark.parametrize("n", [1, 255, 256, 257, 4000, 16000, 33333])
def test_frame_stream_takes_the_last_samples_with_the_end(n):
    # finish(x) is push(x) then finish() in one STFT: the same frames as the whole signal's.
    rng = np.random.default_rng(n)
    x = torch.from_numpy((0.3 * rng.standard_normal(n)).astype(np.float32))
    cut = int(rng.integers(0, n))
    fs = streaming.FrameStream()
    frames = torch.cat([fs.push(x[:cut]), fs.finish(x[cut:])])
    want = frontend.mel_energies(x)
    assert frames.shape == want.shape
    torch.testing.assert_close(frames, want, rtol=1e-6, atol=1e-9)


def synth(seconds: float, sr: int, channels: int, seed: int = 0) -> np.ndarray:
    """Tones, noise bursts, a low-passed stretch and exact silence: quiet and loud mel bands."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr) + 1  # one extra sample: torchaudio's float32 length rounding shows
    t = np.arange(n, dtype=np.float64) / sr
    out = np.empty((n, channels), np.float32)
    for c in range(channels):
        f = 300 + 200 * c + 150 * np.sin(2 * np.pi * t / 37.0)
        x = 0.3 * np.sin(2 * np.pi * np.cumsum(f) / sr)
        x += 0.05 * rng.standard_normal(n) * (np.sin(2 * np.pi * t / 11.0) > 0.5)
        out[:, c] = x
    out[int(0.3 * n):int(0.35 * n)] = 0.0  # exact silence
    lo = slice(int(0.5 * n), int(0.55 * n))  # a 2-sample moving average: little energy up high
    out[lo] = 0.5 * (out[lo] + np.roll(out[lo], 1, axis=0))
    return out


@pytest.fixture(scope="module")
def model():
    return tiny_model(5)


@pytest.mark.parametrize("sr,channels", [(44100, 2), (16000, 1)])
def test_ten_minute_file_streams_like_the_whole_file(sr, channels, tmp_path, model):
    path = tmp_path / "long.wav"
    sf.write(path, synth(600, sr, channels), sr, subtype="PCM_16")
    chunks = list(iter_features([path], None, frontend.DEFAULT_HOP_SECONDS))
    assert len(chunks) >= 600 // streaming.BLOCK_SECONDS  # windows came out block by block
    [(_, _, (windows, ts))] = collect_features(chunks)

    wave = load_waveform(path)
    if sr != frontend.SAMPLE_RATE:
        with sf.SoundFile(path) as f:
            mono = f.read(dtype="float32", always_2d=True).mean(1)
        assert wave.shape == AF.resample(torch.from_numpy(mono), sr, frontend.SAMPLE_RATE).shape
    want, want_ts = frontend.log_mel_windows(wave)
    assert windows.shape == want.shape == (625, 96, 64)
    torch.testing.assert_close(windows, want, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(ts, want_ts.numpy())

    got = embed(path, model=model, windows=True)
    with torch.inference_mode():
        direct = model(want).numpy()
    np.testing.assert_allclose(got.window_embeddings, direct, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got.timestamps, want_ts.numpy())


def test_files_are_read_in_blocks(tmp_path, monkeypatch):
    path = tmp_path / "a.wav"
    sf.write(path, synth(5, 22050, 2), 22050)
    monkeypatch.setattr(streaming, "BLOCK_SECONDS", 1)
    sizes = []
    real = AudioSource.blocks

    def spy(self, frames=-1):
        for b in real(self, frames):
            sizes.append(len(b))
            yield b
    monkeypatch.setattr(AudioSource, "blocks", spy)
    chunks = list(iter_features([path], None, 0.5))
    assert max(sizes) == 22050 and len(sizes) == 6
    assert len(chunks) >= 5 and chunks[-1].last and not any(c.last for c in chunks[:-1])
    [(_, _, (windows, _))] = collect_features(chunks)
    want, _ = frontend.log_mel_windows(load_waveform(path), 0.5)
    assert torch.equal(windows, want)


def test_a_bad_block_fails_its_input_alone(tmp_path, monkeypatch, model):
    monkeypatch.setattr(streaming, "BLOCK_SECONDS", 1)
    good1, good2 = synth(2.5, 16000, 1, seed=1), synth(3, 16000, 1, seed=2)
    bad = synth(5, 16000, 1, seed=3)
    bad[int(3.5 * 16000)] = np.nan  # in the fourth block: windows of the first three are out
    paths = []
    for name, x in [("g1", good1), ("bad", bad), ("g2", good2)]:
        paths.append(tmp_path / f"{name}.wav")
        sf.write(paths[-1], x, 16000, subtype="FLOAT")
    chunks = list(iter_features(paths, None, frontend.DEFAULT_HOP_SECONDS))
    assert any(c.index == 1 and c.windows is not None and len(c.windows) for c in chunks)
    results = list(iter_embeddings(chunks, model, batch_size=3))
    assert [r.index for r in results] == [0, 1, 2]
    assert f"{paths[1]}: contains NaN or infinite samples (the first is sample 56000)" == str(results[1].error)
    assert results[1].window_embeddings is None
    for r, p in zip([results[0], results[2]], [paths[0], paths[2]]):
        np.testing.assert_allclose(r.window_embeddings, embed(p, model=model, windows=True).window_embeddings,
                                   rtol=0, atol=1e-6)


def tone(sr: int, seconds: float = 1.0, hz: float = 1000.0) -> np.ndarray:
    """A 0.3-amplitude sine of ``hz`` at rate ``sr``."""
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
    x = tone(sr, 1.3, hz=200.0)  # below the Nyquist frequency of 1001 Hz
    rng = np.random.default_rng(sr)
    cuts = np.sort(rng.choice(np.arange(1, x.size), 6, replace=False))
    blocks = [r.push(torch.from_numpy(b)) for b in np.split(x, cuts)] + [r.finish()]
    got = torch.cat(blocks)
    assert got.shape[0] == -(-16000 * x.size // sr)  # ceil(16 kHz * duration)
    assert torch.equal(got, resample(x, sr))  # the same numbers however the input is cut
    # The tone keeps its frequency and level: compare with the same tone made at 16 kHz,
    # away from the edges (where both filters see the zero padding).
    want = torch.from_numpy(tone(16000, 1.3, hz=200.0))
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
    ref = make_wav("ref.wav", tone(16000, 2.0), sr=16000, subtype="FLOAT")
    odd = [make_wav(f"r{sr}.wav", tone(sr, 2.0), sr=sr, subtype="FLOAT") for sr in (16001, 48001)]
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
