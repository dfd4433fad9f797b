"""audioembed index / search on real files: ranking, --json, time ranges, bad queries."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from audioembed.cli import main


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
    runner = CliRunner()
    res = runner.invoke(main, ["index", str(tmp_path / "db"), "-o", str(tmp_path / "idx.npz"),
                               "--model", str(tiny_model_dir), "-q"])
    assert res.exit_code == 0, res.output
    z = np.load(tmp_path / "idx.npz")
    assert len(z["names"]) == 4 and z["embeddings"].shape == (4, 128)
    res = runner.invoke(main, ["search", str(tmp_path / "db" / "tone_a.wav"), str(tmp_path / "idx.npz"),
                               "-k", "2", "--model", str(tiny_model_dir), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)["results"]
    assert [r["rank"] for r in got] == [1, 2]
    assert got[0]["name"].endswith("tone_a.wav") and got[0]["score"] > 0.999
    # A time range of the query file: its second half is the tone, its first half noise.
    for rng_, want in (("2.5-4", "tone_a.wav"), ("0-1.5", "noise.wav")):
        res = runner.invoke(main, ["search", f"{tmp_path / 'query.wav'}@{rng_}", str(tmp_path / "idx.npz"),
                                   "-k", "1", "--model", str(tiny_model_dir)])
        assert res.exit_code == 0, res.output
        assert res.output.split()[2].endswith(want), res.output


def test_search_refuses_a_missing_query_and_a_non_index(tmp_path, tiny_model_dir):
    np.savez(tmp_path / "x.npz", foo=np.zeros(3))
    res = CliRunner().invoke(main, ["search", str(tmp_path / "nope.wav"), str(tmp_path / "x.npz")])
    assert res.exit_code == 2 and "not an index" in res.output
