"""``embed()``: shapes, order, per-window output, pooling, batch invariance, input kinds, sample
rates, channels, and inputs whose embedding would not be finite."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from audioembed import AudioError, Embeddings, ModelNotAvailableError, api, embed, extract, frontend
from audioembed.errors import AudioembedError
from audioembed.model_folder import save_model_folder
from helpers_hub import tiny_model
from test_streaming import tone

SR = 16_000
LENGTHS_S = (0.3, 0.96, 1.5, 3.7, 10.0, 2.0)  # 1, 1, 2, 4, 10, 2 windows


@pytest.fixture(scope="module")
def model():
    return tiny_model(3)


def clip(seconds: float, seed: int) -> np.ndarray:
    """Noise with a seed-dependent tone, so clips differ in more than their noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SR))) / SR
    return (0.05 * rng.standard_normal(len(t)) + 0.3 * np.sin(2 * np.pi * (200 + 300 * seed) * t)
            ).astype(np.float32)


@pytest.fixture(scope="module")
def clips():
    return [clip(s, i) for i, s in enumerate(LENGTHS_S)]


def test_one_input_gives_a_unit_float32_vector(model, clips):
    e = embed(clips[2], sr=SR, model=model)
    assert e.shape == (128,) and e.dtype == np.float32
    assert np.linalg.norm(e) == pytest.approx(1.0, abs=1e-6)


def test_list_gives_row_i_for_input_i(model, clips):
    E = embed(clips, sr=SR, model=model)
    assert E.shape == (len(clips), 128) and E.dtype == np.float32
    singles = np.stack([embed(c, sr=SR, model=model) for c in clips])
    np.testing.assert_allclose(E, singles, rtol=0, atol=1e-5)
    perm = [3, 0, 5, 1, 4, 2]
    P = embed([clips[i] for i in perm], sr=SR, model=model)
    np.testing.assert_allclose(P, E[perm], rtol=0, atol=1e-5)
    # Different inputs, different rows: a mix-up would not go unnoticed.
    assert np.abs(E[:, None] - E[None]).sum(-1)[~np.eye(len(clips), dtype=bool)].min() > 1e-2


def test_a_one_element_list_is_still_a_list(model, clips):
    assert embed([clips[0]], sr=SR, model=model).shape == (1, 128)
    with pytest.raises(ValueError, match="empty"):
        embed([], sr=SR, model=model)


def test_windows_true_gives_window_embeddings_and_timestamps(model, clips):
    r = embed(clips[4], sr=SR, model=model, windows=True)  # 10 s
    assert isinstance(r, Embeddings)
    assert r.window_embeddings.shape == (10, 128) and r.window_embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(r.window_embeddings, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(r.timestamps, [(15360 * k + 7600) / SR for k in range(10)])
    # Window k's embedding is the network applied to the frontend's window k.
    wins, _ = frontend.log_mel_windows(torch.from_numpy(clips[4]))
    with torch.inference_mode():
        direct = model(wins).numpy()
    np.testing.assert_allclose(r.window_embeddings, direct, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(r.embedding, embed(clips[4], sr=SR, model=model))


def test_segment_embedding_is_the_normalised_window_mean(model, clips):
    for c in clips:
        r = embed(c, sr=SR, model=model, windows=True)
        mean = r.window_embeddings.astype(np.float64).mean(0)
        np.testing.assert_allclose(r.embedding, mean / np.linalg.norm(mean), rtol=0, atol=1e-6)


def test_windows_true_for_a_list(model, clips):
    r = embed(clips, sr=SR, model=model, windows=True)
    assert r.embedding.shape == (len(clips), 128)
    assert [w.shape[0] for w in r.window_embeddings] == [1, 1, 2, 4, 10, 2]
    assert [len(t) for t in r.timestamps] == [1, 1, 2, 4, 10, 2]
    for i, c in enumerate(clips):
        one = embed(c, sr=SR, model=model, windows=True)
        np.testing.assert_allclose(r.window_embeddings[i], one.window_embeddings, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(r.timestamps[i], one.timestamps)


def test_hop_option_reaches_the_frontend(model, clips):
    r = embed(clips[2], sr=SR, model=model, windows=True, hop=0.48)  # 1.5 s: starts 0, 48, 96
    np.testing.assert_array_equal(r.timestamps, [0.475, 0.955, 1.435])


@pytest.mark.parametrize("batch_size", [7, 64])
def test_batch_size_does_not_change_results(model, clips, batch_size):
    ref = embed(clips, sr=SR, model=model, windows=True, batch_size=1)
    got = embed(clips, sr=SR, model=model, windows=True, batch_size=batch_size)
    np.testing.assert_allclose(got.embedding, ref.embedding, rtol=0, atol=1e-5)
    for a, b in zip(got.window_embeddings, ref.window_embeddings):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_torch_and_numpy_inputs_agree(model, clips):
    x = clips[3]
    ref = embed(x, sr=SR, model=model)
    np.testing.assert_array_equal(embed(torch.from_numpy(x), sr=SR, model=model), ref)
    np.testing.assert_allclose(embed(x.astype(np.float64), sr=SR, model=model), ref, atol=1e-6)
    np.testing.assert_allclose(embed(torch.from_numpy(x).double(), sr=SR, model=model), ref, atol=1e-6)
    pcm = np.round(x * 32768).clip(-32768, 32767).astype(np.int16)
    np.testing.assert_allclose(embed(pcm, sr=SR, model=model),
                               embed(pcm.astype(np.float32) / 32768, sr=SR, model=model), atol=1e-6)


def test_stereo_is_the_embedding_of_the_channel_mean(model, clips):
    left, right = clips[3], clip(3.7, 11)
    stereo = np.stack([left, right])  # (2, n)
    mono = ((left.astype(np.float64) + right) / 2).astype(np.float32)
    ref = embed(mono, sr=SR, model=model, windows=True)
    for x in (stereo, torch.from_numpy(stereo)):
        got = embed(x, sr=SR, model=model, windows=True)
        np.testing.assert_allclose(got.window_embeddings, ref.window_embeddings, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.embedding, ref.embedding, rtol=0, atol=1e-6)
    assert not np.allclose(embed(left, sr=SR, model=model), ref.embedding, atol=1e-3)


def test_stereo_file_is_read_as_the_channel_mean(model, clips, tmp_path):
    stereo = np.stack([clips[2], clip(1.5, 12)])
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo.T, SR, subtype="FLOAT")
    mono = stereo.astype(np.float64).mean(0).astype(np.float32)
    np.testing.assert_allclose(embed(path, model=model), embed(mono, sr=SR, model=model), atol=1e-6)
    np.testing.assert_allclose(embed(str(path), model=model), embed(path, model=model), atol=0)


def test_other_sample_rates_are_resampled(model):
    x8 = clip(2.0, 4)[::2].copy()  # 2 s at 8 kHz
    r = embed(x8, sr=8000, model=model, windows=True)
    assert r.window_embeddings.shape == (2, 128)
    np.testing.assert_array_equal(r.timestamps, [0.475, 1.435])


def test_model_folder_path_and_instance_agree(model, clips, tmp_path):
    folder = save_model_folder(model, tmp_path / "m")
    by_path = embed(clips[:3], sr=SR, model=folder)
    by_str = embed(clips[:3], sr=SR, model=str(folder))
    np.testing.assert_array_equal(by_path, by_str)
    # The folder holds fp16 weights: equal to the fp32 instance within fp16 tolerance.
    np.testing.assert_allclose(by_path, embed(clips[:3], sr=SR, model=model), atol=5e-3)


def test_unreleased_model_says_how_to_get_weights(clips, unreleased_model):
    with pytest.raises(ModelNotAvailableError, match="model folder"):
        embed(clips[0], sr=SR, model=unreleased_model)


def test_a_model_in_training_mode_is_used_in_eval_mode():
    import numpy as np
    import torch

    from audioembed import AudioResNet, ModelConfig, embed

    torch.manual_seed(0)
    model = AudioResNet(ModelConfig(layers=(1, 1, 1, 1), base_width=8)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = np.random.default_rng(0).standard_normal(16000 * 5).astype(np.float32) * 0.1
    a = embed(x, 16000, model=model, batch_size=1)
    b = embed(x, 16000, model=model, batch_size=5)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training, "embed() must leave the caller's module in training mode"


def test_the_callers_module_keeps_its_mode_and_an_eval_module_is_used_as_it_is(clips):
    from audioembed.loading import cached_model

    training = tiny_model(5).train()
    view = cached_model(training, "cpu")
    assert training.training and not view.training and view is not training
    evaluating = tiny_model(5).eval()
    assert cached_model(evaluating, "cpu") is evaluating and cached_model(evaluating, None) is evaluating
    np.testing.assert_allclose(embed(clips[1], sr=SR, model=training),
                               embed(clips[1], sr=SR, model=evaluating), atol=1e-6)


def test_sr_with_only_file_input_raises(clips, tmp_path):
    from audioembed.errors import InvalidArgumentError

    path = tmp_path / "c.wav"
    sf.write(path, clips[1], SR, subtype="FLOAT")
    with pytest.raises(InvalidArgumentError, match="sr=16000 with file input"):
        embed(path, sr=SR, model=tiny_model(3))
    with pytest.raises(InvalidArgumentError, match="file input"):
        embed([path, str(path)], sr=SR, model=tiny_model(3))
    mixed = embed([path, clips[1]], sr=SR, model=tiny_model(3))  # sr is the array's rate
    np.testing.assert_allclose(mixed[0], mixed[1], atol=1e-5)


def test_workers_none_is_the_clis_automatic_choice(model, clips, monkeypatch):
    from audioembed import api, backends, extract

    # One function decides "auto" for embed() and for extract's --workers default.
    assert api.default_workers is backends.default_workers is extract.default_workers
    asked = []
    real = api.iter_features

    def spy(items, sr, hop, workers=0):
        asked.append(workers)
        return real(items, sr, hop, workers)

    monkeypatch.setattr(api, "iter_features", spy)
    want = embed(clips[:3], sr=SR, model=model, workers=0)
    for cores, auto in ((2, 0), (16, 1)):  # a torch CPU network on <= 2 cores gets no worker
        monkeypatch.setattr(backends.os, "cpu_count", lambda: cores)
        assert backends.default_workers(None, "torch") == auto
        np.testing.assert_array_equal(embed(clips[:3], sr=SR, model=model), want)
        assert asked[-1] == auto
    np.testing.assert_array_equal(embed(clips[:3], sr=SR, model=model, workers=2), want)
    assert asked[-1] == 2  # an explicit count is used as given


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


@pytest.mark.usefixtures("one_thread")  # many small forward passes
def test_embed_takes_an_integral_float_sample_rate(tiny_model_dir):
    x = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    want = api.embed(x, sr=16000, model=tiny_model_dir)
    for sr in (16000.0, np.float64(16000), np.float32(16000)):
        np.testing.assert_array_equal(api.embed(x, sr=sr, model=tiny_model_dir), want)
    for bad in (16000.5, float("nan"), True):
        with pytest.raises(AudioembedError, match="invalid sample rate"):
            api.embed(x, sr=bad, model=tiny_model_dir)


def test_huge_finite_samples_fail_instead_of_a_nan_embedding(make_wav, tiny_model_dir, tmp_path):
    from audioembed import hear
    from audioembed.loading import load_model

    huge = (4e18 * tone(16000, 1.5) / 0.3).astype(np.float32)
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
    batch = torch.stack([torch.from_numpy(tone(16000, 1.5)), torch.from_numpy(huge)])
    for fn in (hear.get_scene_embeddings, hear.get_timestamp_embeddings):
        with pytest.raises(ValueError, match=r"sounds \[1\] are not finite"):
            fn(batch, model)


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
