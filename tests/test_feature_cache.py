"""The mel-energy feature cache: contents, grouping, padding, failures, clipping, resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from audioembed import frontend
from audioembed.audio_io import load_waveform
from training import feature_cache as fc
from training.feature_cache import CACHE_SCALE, CacheWriter, FeatureCache, build_cache, read_manifest
from helpers_cli import cli


def _write_audio(folder, rates=(16000, 22050, 8000, 44100), seconds=(1.5, 2.0, 1.2, 0.5)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i, (sr, sec) in enumerate(zip(rates, seconds)):
        t = np.arange(int(sr * sec)) / sr
        x = 0.5 * np.sin(2 * np.pi * (300 + 150 * i) * t) + 0.05 * rng.standard_normal(t.size)
        if i == 1:
            x = np.stack([x, -0.5 * x], axis=1)  # stereo: averaged to mono
        name = f"f{i}.wav"
        sf.write(folder / name, x.astype(np.float32), sr)
        names.append(name)
    (folder / "broken.wav").write_bytes(b"not audio")
    return names


@pytest.fixture
def corpus(tmp_path):
    audio = tmp_path / "audio"
    names = _write_audio(audio)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,recording\n"
                        f"{names[0]},dog;bark,talk\n{names[1]},bark,talk\n{names[2]},cat,\n"
                        f"{names[3]},,\nbroken.wav,,\n")
    return audio, manifest


@pytest.mark.slow  # two decoding worker processes
def test_cache_matches_frontend_and_groups_recordings(tmp_path, corpus):
    audio, manifest = corpus
    report = build_cache(manifest, tmp_path / "cache", root=audio, jobs=2, progress=False)
    assert report.added == 4 and len(report.failures) == 1 and "broken.wav" in report.failures[0]
    assert json.loads((tmp_path / "cache" / "failures.json").read_text()) == report.failures
    c = FeatureCache(tmp_path / "cache")
    assert c.num_recordings == 3 and c.num_files == 4
    talk = c.recording_ids.index("talk")
    files = np.flatnonzero(c.file_recording == talk)
    assert [c.file_keys[f] for f in files] == ["f0.wav", "f1.wav"]  # manifest order
    assert c.file_labels[files[0]] == {"dog", "bark"}
    whole = c.frames(talk)
    assert whole.dtype == np.float32 and whole.shape == (c.lengths[talk], frontend.N_MELS)
    for f in files:
        ref = frontend.mel_energies(load_waveform(str(audio / c.file_keys[f]))).numpy()
        got = whole[c.file_start[f]:c.file_start[f] + c.file_frames[f]]
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-5)  # fp16 storage, subnormals near 0
    # A window straddling the two files of a recording is contiguous in time.
    s = int(c.file_start[files[1]]) - 10
    np.testing.assert_array_equal(c.window(talk, s), whole[s:s + frontend.WINDOW_FRAMES])
    # Past the end: zero energy.
    short = c.recording_ids.index("f3.wav")
    n = int(c.lengths[short])
    w = c.window(short, n - 20)
    np.testing.assert_array_equal(w[:20], c.frames(short)[-20:])
    assert not w[20:].any()
    assert not c.file_window(files[0], int(c.file_frames[files[0]]) - 5)[5:].any()
    meta = json.loads((tmp_path / "cache" / "cache.json").read_text())
    assert meta["cache_scale"] == CACHE_SCALE and meta["files"] == 4 and meta["complete"]
    assert meta["manifest_sha256"] == fc.sha256_of(manifest)


def test_chunked_energies_equal_whole_file(monkeypatch):
    x = torch.from_numpy(np.random.default_rng(1).standard_normal(16000 * 3).astype(np.float32))
    whole = frontend.mel_energies(x).numpy()
    monkeypatch.setattr(fc, "CHUNK_FRAMES", 70)
    np.testing.assert_allclose(fc.chunked_mel_energies(x), whole, rtol=1e-5, atol=1e-5)


def test_resume_skips_finalized_shards_and_redoes_unfinished(tmp_path, corpus):
    audio, manifest = corpus
    out = tmp_path / "cache"
    build_cache(manifest, out, root=audio, block_frames=1, progress=False)  # a block per file
    reference = FeatureCache(out)
    ref_frames = [reference.frames(r) for r in range(reference.num_recordings)]
    # Simulate a kill during the last shard: its index never got written.
    last = sorted(out.glob("block-*.json"))[-1]
    last.unlink()
    last.with_suffix(".f16").rename(last.with_suffix(".tmp"))
    report = build_cache(manifest, out, root=audio, block_frames=1, progress=False)
    assert report.skipped == 3 and report.added == 1 and not list(out.glob("*.tmp"))
    again = FeatureCache(out)
    assert again.recording_ids == reference.recording_ids
    for r, ref in enumerate(ref_frames):
        np.testing.assert_array_equal(again.frames(r), ref)
    assert build_cache(manifest, out, root=audio, progress=False).added == 0


def test_loud_energies_are_scaled_and_overflow_is_counted(tmp_path):
    # A full-scale square wave: mel energies above 1e4, near the fp16 maximum of 65504.
    t = np.arange(16000) / 16000
    square = np.sign(np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    e = frontend.mel_energies(torch.from_numpy(square)).numpy()
    assert e.max() > 1e4  # unscaled, fp16 would keep only ~3 significant digits near its top
    stored, clipped = fc.to_stored(e)
    assert clipped == 0
    np.testing.assert_allclose(stored.astype(np.float32) / CACHE_SCALE, e, rtol=1e-3, atol=1e-5)
    huge = np.full((3, frontend.N_MELS), 1e9, dtype=np.float32)
    with CacheWriter(tmp_path / "c") as w:
        w.add("huge", huge)
        assert w.clipped == huge.size
    got = FeatureCache(tmp_path / "c").frames(0)
    assert np.all(got == np.float32(fc.FP16_MAX / CACHE_SCALE))


def test_manifest_forms(tmp_path, corpus):
    audio, _ = corpus
    (audio / "pkg").mkdir()
    (audio / "f0.wav").rename(audio / "pkg" / "f0.wav")
    m = tmp_path / "corpus.csv"
    m.write_text("package,path,duration_s\npkg,f0.wav,1.5\n")
    (e,) = read_manifest(m, audio)
    assert e.key == "pkg/f0.wav" and e.recording == "pkg/f0.wav" and e.path == str(audio / "pkg" / "f0.wav")
    folder = read_manifest(audio)
    assert [x.key for x in folder] == ["broken.wav", "f1.wav", "f2.wav", "f3.wav", "pkg/f0.wav"]
    bad = tmp_path / "bad.csv"
    bad.write_text("file\nx.wav\n")
    with pytest.raises(fc.CacheError, match="path"):
        read_manifest(bad)


def test_cache_command(tmp_path, corpus):
    from training.cli import cache

    audio, manifest = corpus
    res = cli("--manifest", manifest, "--root", audio, "--out", tmp_path / "c", "--jobs", "1", command=cache)
    assert res.exit_code == 0, res.output
    assert "4 files cached" in res.output and "1 failed" in res.output and "broken.wav" in res.output
    assert FeatureCache(tmp_path / "c").num_files == 4


def test_a_cache_with_the_old_shard_names_is_read_and_resumed(tmp_path):
    """Caches built before blocks were called blocks hold shard-* files: same format, same data."""
    import os

    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        sf.write(audio / f"f{i}.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\nf0.wav\nf1.wav\n")
    out = tmp_path / "cache"
    build_cache(manifest, out, root=audio, block_frames=1, progress=False)
    # Rename to the old layout: shard-NNNNN.{f16,json}, the index naming its data "shard".
    for idx in sorted(out.glob("block-*.json")):
        n = idx.stem.split("-")[1]
        index = json.loads(idx.read_text())
        index = {"shard": f"shard-{n}.f16", **{k: v for k, v in index.items() if k != "data"}}
        (out / f"shard-{n}.json").write_text(json.dumps(index))
        os.replace(out / f"block-{n}.f16", out / f"shard-{n}.f16")
        idx.unlink()
    old = FeatureCache(out)
    assert old.num_files == 2
    manifest.write_text("path\nf0.wav\nf1.wav\nf2.wav\n")
    report = build_cache(manifest, out, root=audio, block_frames=1, progress=False)
    assert report.skipped == 2 and report.added == 1
    assert [p.name for p in sorted(out.glob("block-*.json"))] == ["block-00002.json"]
    both = FeatureCache(out)
    assert both.num_files == 3
    for f in range(2):  # the old blocks' data is unchanged
        np.testing.assert_array_equal(both.file_window(f, 0), old.file_window(f, 0))
