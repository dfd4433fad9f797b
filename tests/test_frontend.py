"""The frontend's numbers (paper section 4.1), checked against independent computations."""
from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch

from audioembed import frontend as fe
from audioembed.audio_io import load_waveform

SR = 16_000


def htk_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def htk_mel_inv(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def band_centres() -> np.ndarray:
    """Centre frequency of each of the 64 HTK-mel triangles: evenly spaced in mel, 125-7500 Hz."""
    edges = htk_mel_inv(np.linspace(htk_mel(125.0), htk_mel(7500.0), 64 + 2))
    return edges[1:-1]


def numpy_filterbank() -> np.ndarray:
    """HTK triangles with peak 1 on the rfft bin frequencies, written from the formula."""
    edges = htk_mel_inv(np.linspace(htk_mel(125.0), htk_mel(7500.0), 64 + 2))
    freqs = np.linspace(0, SR / 2, 512 // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lo) / (mid - lo)
    down = (hi - freqs[None, :]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down)).T  # (257, 64)


def numpy_mel_energies(x: np.ndarray) -> np.ndarray:
    """float64 reference: frame f centred on sample 160 f, zeros outside, periodic Hann 400."""
    n = len(x)
    frames = -(-n // 160)
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic Hann
    padded = np.concatenate([np.zeros(200), x.astype(np.float64), np.zeros(400)])
    segs = np.stack([padded[160 * f:160 * f + 400] * win for f in range(frames)])
    power = np.abs(np.fft.rfft(segs, n=512, axis=1)) ** 2
    return power @ numpy_filterbank()


def tone(freq: float, seconds: float = 1.0, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    return (amp * torch.sin(2 * math.pi * freq * t)).float()


def test_constants_match_the_paper():
    assert (fe.SAMPLE_RATE, fe.WIN_LENGTH, fe.HOP_LENGTH, fe.N_FFT) == (16000, 400, 160, 512)
    assert (fe.N_MELS, fe.F_MIN, fe.F_MAX, fe.MEL_SCALE) == (64, 125.0, 7500.0, "htk")
    assert (fe.LOG_OFFSET, fe.WINDOW_FRAMES, fe.DEFAULT_HOP_SECONDS) == (1e-4, 96, 0.96)
    assert fe.MIN_TRAILING_FRAMES == 48
    cfg = fe.config()
    assert cfg["spectrum"] == "power" and cfg["window"] == "hann_periodic"
    assert fe.config_mismatches(cfg) == []


def test_filterbank_is_the_htk_formula():
    np.testing.assert_allclose(fe.mel_filterbank().numpy(), numpy_filterbank(), atol=1e-5)


def test_every_band_centre_tone_lands_in_its_band():
    centres = band_centres()
    waves = torch.stack([tone(f) for f in centres])
    mel = fe.mel_energies(waves)[:, 10:-10].mean(dim=1)  # (64 tones, 64 bands), edges skipped
    assert mel.argmax(dim=1).tolist() == list(range(64))


@pytest.mark.parametrize("freq", [250.0, 1000.0, 3000.0, 6000.0])
def test_tones_land_in_the_band_nearest_in_mel(freq):
    mel = fe.mel_energies(tone(freq))[10:-10].mean(0)
    nearest = int(np.argmin(np.abs(htk_mel(band_centres()) - htk_mel(freq))))
    assert int(mel.argmax()) == nearest
    # The Hann main lobe is +-80 Hz (2 x 16000/400): bands whose triangles reach within 100 Hz
    # of the tone hold all but a sliver of the energy (low bands are narrower than the lobe).
    edges = htk_mel_inv(np.linspace(htk_mel(125.0), htk_mel(7500.0), 66))
    near = torch.from_numpy((edges[:-2] < freq + 100) & (edges[2:] > freq - 100))
    assert mel[near].sum() / mel.sum() > 0.99


def test_mel_energies_match_torchaudio_melspectrogram():
    import torchaudio

    x = torch.randn(24_000, generator=torch.Generator().manual_seed(0))
    ref = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR, n_fft=512, win_length=400, hop_length=160, f_min=125.0, f_max=7500.0,
        n_mels=64, window_fn=torch.hann_window, power=2.0, center=True, pad_mode="constant",
        norm=None, mel_scale="htk")(x).T
    ours = fe.mel_energies(x)
    # torchaudio also keeps the frame centred on sample n (outside the signal); ours stops at
    # ceil(n / 160) frames, whose centres lie inside it.
    assert ours.shape == (150, 64) and ref.shape == (151, 64)
    torch.testing.assert_close(ours, ref[:150], rtol=1e-6, atol=1e-9 * float(ref.max()))


@pytest.mark.parametrize("starts", [[0], [0, 96], [3, 8, 13, 18], [0, 96, 192, 250], [5, 2]])
def test_gathered_windows_equal_indexing_the_padded_frames(starts):
    frames = torch.rand(2, 260, fe.N_MELS, generator=torch.Generator().manual_seed(len(starts)))
    padded = torch.cat([frames, torch.full((2, max(starts) + 96, fe.N_MELS), 0.25)], dim=1)
    idx = torch.as_tensor(starts).reshape(-1, 1) + torch.arange(fe.WINDOW_FRAMES)
    got = fe.gather_windows(frames, starts, pad_value=0.25)
    assert got.shape == (2, len(starts), fe.WINDOW_FRAMES, fe.N_MELS)
    assert torch.equal(got, padded[:, idx])
    logged = fe.log_mel(got)
    assert logged.is_contiguous() and torch.equal(logged, torch.log(padded[:, idx] + fe.LOG_OFFSET))


def test_mel_energies_match_a_numpy_computation():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(5000), 0.3 * np.sin(np.arange(3017) * 0.3)])
    ours = fe.mel_energies(torch.from_numpy(x).float()).numpy().astype(np.float64)
    ref = numpy_mel_energies(x.astype(np.float32))
    assert ours.shape == ref.shape == (-(-8017 // 160), 64)
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-6 * ref.max())


def test_parseval_energy_of_a_tone():
    """Inside 125-7500 Hz the triangles sum to one, so the band sum of a tone's mel energies is its
    one-sided spectral power: (N_FFT / 2) * sum((window * x)^2) per frame (Parseval)."""
    x = tone(1234.5, amp=0.3)
    mel = fe.mel_energies(x)[3:-3]
    win = torch.hann_window(400, periodic=True, dtype=torch.float64)
    xd = x.double()
    frames = torch.stack([xd[160 * f - 200:160 * f + 200] for f in range(3, fe.num_frames(len(x)) - 3)])
    expected = 256 * ((frames * win) ** 2).sum(dim=1)
    torch.testing.assert_close(mel.sum(dim=1).double(), expected, rtol=0.01, atol=0)


def test_white_noise_energy_per_band():
    """E|X_k|^2 = sigma^2 * sum(w^2) for white noise, so band b expects sigma^2 * 150 * sum(fb[:, b])."""
    sigma = 0.1
    x = sigma * torch.randn(10 * SR, generator=torch.Generator().manual_seed(2))
    mean = fe.mel_energies(x).mean(0).double()
    expected = sigma ** 2 * 150.0 * fe.mel_filterbank().sum(0).double()
    torch.testing.assert_close(mean.sum(), expected.sum(), rtol=0.02, atol=0)
    torch.testing.assert_close(mean, expected, rtol=0.15, atol=0)


def test_energies_scale_with_the_square_of_amplitude():
    x = tone(700.0, seconds=0.5, amp=0.1)
    e = fe.mel_energies(x)
    # Power, not magnitude: 3x the amplitude is 9x the energy (up to float32 FFT round-off in
    # the far bands, hence the absolute tolerance relative to the peak).
    torch.testing.assert_close(fe.mel_energies(3 * x), 9 * e, rtol=1e-5, atol=1e-6 * float(e.max()))


def test_log_is_stabilised_by_1e_minus_4():
    e = torch.tensor([0.0, 1e-6, 1.0, 100.0])
    torch.testing.assert_close(fe.log_mel(e), torch.log(e + 1e-4))
    assert fe.log_mel(torch.zeros(1)).item() == pytest.approx(math.log(1e-4), rel=1e-6)


def test_frame_count_is_the_frames_centred_inside_the_signal():
    for n in (1, 159, 160, 161, 8000, 15360, 24000):
        assert fe.num_frames(n) == math.ceil(n / 160)
        assert fe.mel_energies(torch.zeros(n)).shape == (math.ceil(n / 160), 64)
    assert fe.mel_energies(torch.zeros(0)).shape == (0, 64)
    assert fe.mel_energies(torch.zeros(0)).dtype == torch.float32


def test_batched_energies_equal_one_by_one():
    x = torch.randn(3, 5000, generator=torch.Generator().manual_seed(3))
    batched = fe.mel_energies(x)
    for i in range(3):
        torch.testing.assert_close(batched[i], fe.mel_energies(x[i]), rtol=1e-5, atol=1e-6)


def test_frontend_is_deterministic():
    x = torch.randn(3 * SR, generator=torch.Generator().manual_seed(4))
    a, ta = fe.log_mel_windows(x)
    b, tb = fe.log_mel_windows(x.clone())
    assert torch.equal(a, b) and torch.equal(ta, tb)


# -- windows and timestamps -------------------------------------------------------------------


@pytest.mark.parametrize("seconds, n_windows", [(0.5, 1), (0.96, 1), (1.5, 2), (10.0, 10)])
def test_window_count_and_timestamps(seconds, n_windows):
    x = torch.randn(int(round(seconds * SR)), generator=torch.Generator().manual_seed(5))
    windows, ts = fe.log_mel_windows(x)
    assert windows.shape == (n_windows, 96, 64) and windows.dtype == torch.float32
    assert ts.dtype == torch.float64
    # Window k covers frames 96k..96k+95, centred on samples 15360k .. 15360k + 15200.
    assert ts.tolist() == [(15360 * k + 7600) / 16000 for k in range(n_windows)]
    np.testing.assert_allclose(ts.numpy(), 0.475 + 0.96 * np.arange(n_windows), rtol=0, atol=1e-12)


def test_window_contents_are_the_log_mel_frames():
    x = torch.randn(int(1.5 * SR), generator=torch.Generator().manual_seed(6))
    logmel = fe.log_mel(fe.mel_energies(x))  # (150, 64)
    windows, _ = fe.log_mel_windows(x)
    assert torch.equal(windows[0], logmel[:96])
    assert torch.equal(windows[1, :54], logmel[96:])


def test_padding_is_zero_energy():
    floor = torch.log(torch.tensor(1e-4, dtype=torch.float32))
    x = torch.randn(SR // 2, generator=torch.Generator().manual_seed(7))  # 50 frames
    windows, _ = fe.log_mel_windows(x)
    assert windows.shape == (1, 96, 64)
    assert torch.equal(windows[0, 50:], floor.expand(46, 64))
    assert (windows[0, :50] > floor).all()
    trailing, _ = fe.log_mel_windows(torch.randn(int(1.5 * SR)))  # 150 frames: 54 real in window 2
    assert torch.equal(trailing[1, 54:], floor.expand(42, 64))


def test_short_and_silent_inputs_give_one_floor_window():
    floor = torch.log(torch.tensor(1e-4, dtype=torch.float32))
    for n in (0, 1, 400):
        windows, ts = fe.log_mel_windows(torch.zeros(n))
        assert windows.shape == (1, 96, 64) and torch.equal(windows, floor.expand(1, 96, 64))
        assert ts.tolist() == [0.475]


def test_trailing_partial_window_needs_half_a_window():
    # 96 + 47 frames: the remainder is under half a window and dropped; 96 + 48 keeps it.
    assert fe.window_starts(96 + 47, 96) == [0]
    assert fe.window_starts(96 + 48, 96) == [0, 96]
    assert fe.window_starts(96, 96) == [0]
    assert fe.window_starts(0, 96) == [0]
    assert fe.window_starts(192, 96) == [0, 96]


@pytest.mark.parametrize("hop, starts", [
    (0.48, [0, 48, 96]),   # 150 frames; the window at 96 holds 54 frames
    (0.5, [0, 50, 100]),   # the window at 100 holds exactly 50
    (0.25, [0, 25, 50, 75]),  # the window at 75 holds 75 frames; 100 would hold 50
])
def test_hop_option(hop, starts):
    x = torch.randn(int(1.5 * SR), generator=torch.Generator().manual_seed(8))
    windows, ts = fe.log_mel_windows(x, hop_seconds=hop)
    assert fe.hop_frames(hop) == round(hop * 100)
    assert fe.window_starts(150, fe.hop_frames(hop)) == starts
    assert windows.shape[0] == len(starts)
    assert ts.tolist() == [(160 * s + 7600) / 16000 for s in starts]
    logmel = fe.log_mel(fe.mel_energies(x))
    assert torch.equal(windows[1], logmel[starts[1]:starts[1] + 96])


def test_hop_accepts_numpy_scalars_and_refuses_nonsense():
    assert fe.hop_frames(np.float32(0.5)) == 50
    assert fe.hop_frames(1) == 100
    for bad in (0, 0.004, -1.0, float("nan"), float("inf"), True, "0.5", None):
        with pytest.raises(ValueError, match="hop"):
            fe.hop_frames(bad)
    with pytest.raises(ValueError, match="mono"):
        fe.log_mel_windows(torch.zeros(2, 100))


def test_timestamps_do_not_drift_over_ten_hours():
    n_frames = 10 * 3600 * 100  # 3.6 million frames
    starts = fe.window_starts(n_frames, fe.hop_frames(0.96))
    ts = fe.window_timestamps(starts).numpy()
    assert len(ts) == 37_500
    exact = [float(Fraction(15360 * k + 7600, 16000)) for k in range(len(ts))]
    assert ts.tolist() == exact  # correctly rounded, every one of them
    assert ts[-1] == 35999.515
    # The naive running sum would have drifted: this is what integer arithmetic avoids.
    naive = 0.475 + np.cumsum(np.full(len(ts) - 1, np.float32(0.96)), dtype=np.float32)
    assert abs(float(naive[-1]) - exact[-1]) > 1e-3
    # An offset (streaming) is added in frames, not seconds.
    assert fe.window_timestamps([0], offset_frames=n_frames).tolist() == [36000.475]


def test_resampled_input_keeps_its_frequency():
    """A 44.1 kHz tone reaches the same mel band as the same tone generated at 16 kHz."""
    t = np.arange(44_100) / 44_100
    x44 = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wave = load_waveform(x44, 44_100)
    assert wave.shape == (16_000,)
    a = fe.mel_energies(wave)[10:-10].mean(0)
    b = fe.mel_energies(tone(1000.0))[10:-10].mean(0)
    assert int(a.argmax()) == int(b.argmax())
    torch.testing.assert_close(a, b, rtol=0.05, atol=1e-3 * float(b.max()))


def test_frontend_leaves_the_thread_setting_alone():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        fe.log_mel_windows(torch.randn(SR))
        assert torch.get_num_threads() == 2
        with pytest.raises(KeyError):
            with fe.single_threaded():
                assert torch.get_num_threads() == 1
                raise KeyError("restored even on error")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
