"""audioembed index / search on real files: ranking, --json, time ranges (past the end: a
warning, an error under --strict), bad queries."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from helpers_cli import cli


def _clips(folder):
    import soundfile as sf

    sr = 16000
    t = np.arange(2 * sr) / sr
    rng = np.random.default_rng(0)
    sounds = {"tone_a.wav": np.sin(2 * np.pi * 440 * t), "tone_b.wav": np.sin(2 * np.pi * 450 * t),
              "noise.wav": rng.standard_normal(t.size), "click.wav": (t % 0.25 < 0.002).astype(float)}
    folder.mkdir()
    for name, x in sounds.items():
        sf.write(folder / name, (0.3 * x).astype(np.float32), sr)
    sf.write(folder.parent / "query.wav", (0.3 * np.concatenate([sounds["noise.wav"], sounds["tone_a.wav"]])
                                           ).astype(np.float32), sr)


def test_index_then_search_ranks_by_similarity(tmp_path, tiny_model_dir):
    _clips(tmp_path / "db")
    res = cli("index", tmp_path / "db", "-o", tmp_path / "idx.npz", "--model", tiny_model_dir, "-q")
    assert res.exit_code == 0, res.output
    z = np.load(tmp_path / "idx.npz")
    assert len(z["names"]) == 4 and z["embeddings"].shape == (4, 128)
    res = cli("search", tmp_path / "db" / "tone_a.wav", tmp_path / "idx.npz", "-k", "2", "--model",
              tiny_model_dir, "--json")
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)["results"]
    assert [r["rank"] for r in got] == [1, 2]
    assert got[0]["name"].endswith("tone_a.wav") and got[0]["score"] > 0.999
    # A time range of the query file: its second half is the tone, its first half noise.
    for rng_, want in (("2.5-4", "tone_a.wav"), ("0-1.5", "noise.wav")):
        res = cli("search", f"{tmp_path / 'query.wav'}@{rng_}", tmp_path / "idx.npz", "-k", "1", "--model",
                  tiny_model_dir)
        assert res.exit_code == 0, res.output
        assert res.output.split()[2].endswith(want), res.output


def test_search_refuses_a_missing_query_and_a_non_index(tmp_path, tiny_model_dir):
    np.savez(tmp_path / "x.npz", foo=np.zeros(3))
    res = cli("search", tmp_path / "nope.wav", tmp_path / "x.npz")
    assert res.exit_code == 2 and "not an index" in res.output


def test_index_takes_extracts_options_and_passes_them_through(tmp_path, tiny_model_dir):
    from audioembed import cli as commands

    params = {cmd: {p.name: p for p in getattr(commands, cmd).params} for cmd in ("extract", "index")}
    for name in ("device", "batch_size", "workers", "layer", "backend"):
        a, b = params["extract"][name], params["index"][name]
        # One definition (cli.*_OPTION) for both commands, so their help and defaults cannot drift.
        assert (a.opts, a.default, a.help, repr(a.type)) == (b.opts, b.default, b.help, repr(b.type)), name
    _clips(tmp_path / "db")
    opts = ["--model", str(tiny_model_dir), "--device", "cpu", "--batch-size", "3", "--workers", "0",
            "--layer", "pooled", "-q"]
    res = cli("index", tmp_path / "db", "-o", tmp_path / "idx.npz", *opts)
    assert res.exit_code == 0, res.output
    res = cli("extract", tmp_path / "db", "-r", "-o", tmp_path / "ex.npz", *opts)
    assert res.exit_code == 0, res.output
    with np.load(tmp_path / "idx.npz") as idx, np.load(tmp_path / "ex.npz") as ex:
        assert idx["embeddings"].shape == ex["embeddings"].shape == (4, 512)  # tiny model: 2 x 256 pooled
        np.testing.assert_array_equal(idx["embeddings"], ex["embeddings"])
        assert list(idx["names"]) == list(ex["names"])
    # A pooled index is searched with the pooled query embedding.
    res = cli("search", tmp_path / "db" / "tone_a.wav", tmp_path / "idx.npz", "-k", "1", "--model",
              tiny_model_dir, "--layer", "pooled", "--json")
    assert res.exit_code == 0, res.output
    [top] = json.loads(res.output)["results"]
    assert top["name"].endswith("tone_a.wav") and top["score"] > 0.999
    res = cli("search", tmp_path / "db" / "tone_a.wav", tmp_path / "idx.npz", "--model", tiny_model_dir)
    assert res.exit_code == 2 and "same --model and --layer" in res.output
    res = cli("index", tmp_path / "db", "-o", tmp_path / "bad.npz", "--model", tiny_model_dir, "--batch-size",
              "0")
    assert res.exit_code == 2 and not (tmp_path / "bad.npz").exists()


def test_index_hands_extracts_options_and_defaults_to_extract_run(tmp_path, monkeypatch):
    from audioembed import extract
    from audioembed.extract import RunReport

    seen = []

    def fake_run(inputs, output, **kwargs):
        seen.append(kwargs)
        return RunReport()

    monkeypatch.setattr(extract, "run", fake_run)
    out = str(tmp_path / "idx.npz")
    res = cli("index", "db", "-o", out, "--device", "cpu", "--batch-size", "7", "--workers", "0", "--layer",
              "pooled", "--backend", "onnx", "-q")
    assert res.exit_code == 0, res.output
    got = seen[-1]
    assert (got["device"], got["batch_size"], got["workers"], got["layer"], got["backend"]) == \
        ("cpu", 7, 0, "pooled", "onnx")
    assert got["fmt"] == "npz" and got["recursive"]
    res = cli("index", "db", "-o", out, "-q")
    assert res.exit_code == 0, res.output
    got = seen[-1]  # extract's defaults
    assert (got["device"], got["batch_size"], got["workers"], got["layer"], got["backend"]) == \
        (None, 64, None, "embedding", None)


def _index_and_query(tmp_path, model):
    sr = 16000
    t = np.arange(int(2.5 * sr)) / sr
    sf.write(tmp_path / "q.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    (tmp_path / "db").mkdir()
    sf.write(tmp_path / "db" / "n.wav", (0.1 * np.random.default_rng(0).standard_normal(sr)).astype(np.float32), sr)
    res = cli("index", tmp_path / "db", "-o", tmp_path / "i.npz", "--model", model, "-q")
    assert res.exit_code == 0, res.output
    return tmp_path / "q.wav", tmp_path / "i.npz"


@pytest.mark.usefixtures("one_thread")  # many small forward passes
def test_a_range_past_the_end_warns_and_fails_under_strict(tmp_path, tiny_model_dir):
    q, idx = _index_and_query(tmp_path, tiny_model_dir)
    base = ["--model", str(tiny_model_dir), "-k", "1"]
    res = cli("search", f"{q}@100-200", idx, *base)
    assert res.exit_code == 0 and "warning:" in res.stderr and "starts after the audio ends" in res.stderr
    res = cli("search", f"{q}@100-200", idx, *base, "--strict")
    assert res.exit_code == 2 and "starts after the audio ends" in res.output and "--strict" in res.output
    res = cli("search", f"{q}@1-2", idx, *base, "--strict")
    assert res.exit_code == 0 and "warning" not in res.stderr, res.output
    res = cli("search", f"{q}@-3-2", idx, *base)
    assert res.exit_code == 2 and "is not a time range" in res.output and "no such query" not in res.output
