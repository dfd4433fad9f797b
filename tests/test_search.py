"""Query-by-example search: exact blocked top-k, index files, time-range queries (and malformed
ones), typed results, and a 1M-row index (its search time: benchmarks/bench_search.py)."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from audioembed.search import (Index, SearchError, normalise, parse_query, range_mean, search,
                               top_k)


def test_top_k_matches_a_full_sort_across_blocks_with_ties():
    rng = np.random.default_rng(0)
    emb = normalise(rng.standard_normal((1000, 16)).astype(np.float32))
    emb[500] = emb[10]  # a tie: the lower row ranks first
    q = np.stack([emb[10], normalise(rng.standard_normal(16).astype(np.float32))])
    scores, rows = top_k(q, emb, k=7, block_rows=64)
    full = q @ emb.T
    for j in range(2):
        expected = sorted(range(1000), key=lambda i: (-full[j, i], i))[:7]
        assert rows[j].tolist() == expected
        np.testing.assert_allclose(scores[j], full[j, expected], rtol=1e-6)
    assert rows[0, :2].tolist() == [10, 500]
    # k beyond the index returns every row.
    assert top_k(q, emb[:5], k=50)[1].shape == (2, 5)


def test_search_ranks_a_toy_index_by_cosine(tmp_path):
    names = np.array(["dog.wav", "cat.wav", "car.wav"])
    emb = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 3]], dtype=np.float32)  # unnormalised on disk
    np.savez(tmp_path / "idx.npz", names=names, embeddings=emb)
    index = Index.load(tmp_path / "idx.npz")
    got = search(index, np.array([1.0, 0.1, 0.0]), k=2)
    assert [r["name"] for r in got] == ["dog.wav", "cat.wav"] and [r["rank"] for r in got] == [1, 2]
    assert got[0]["score"] == pytest.approx(1 / np.sqrt(1.01), rel=1e-6)
    np.savez(tmp_path / "bad.npz", embeddings=emb)
    with pytest.raises(SearchError, match="not an index"):
        Index.load(tmp_path / "bad.npz")


def test_time_range_queries(tmp_path):
    assert parse_query("clip.wav@12.5-14.0") == ("clip.wav", 12.5, 14.0)
    assert parse_query("clip.wav") == ("clip.wav", None, None)
    odd = tmp_path / "take@1-2"
    odd.write_bytes(b"")
    assert parse_query(str(odd)) == (str(odd), None, None)  # an existing file name wins
    with pytest.raises(SearchError, match="after its start"):
        parse_query("a.wav@3-2")
    win = np.eye(4, dtype=np.float32)
    ts = np.array([0.48, 1.44, 2.40, 3.36])
    np.testing.assert_allclose(range_mean(win, ts, 1.0, 2.5), normalise(np.array([0, 1, 1, 0], np.float32)))
    np.testing.assert_allclose(range_mean(win, ts, 3.0, 3.1), [0, 0, 0, 1])  # nearest window


def test_time_range_query_on_real_audio_prefers_the_matching_part(tmp_path, tiny_model_dir):
    import soundfile as sf

    from audioembed import embed
    from audioembed.search import query_embedding

    sr = 16000
    t = np.arange(3 * sr) / sr
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    noise = 0.3 * np.random.default_rng(0).standard_normal(3 * sr)
    sf.write(tmp_path / "q.wav", np.concatenate([tone, noise]).astype(np.float32), sr)
    sf.write(tmp_path / "tone.wav", tone.astype(np.float32), sr)
    sf.write(tmp_path / "noise.wav", noise.astype(np.float32), sr)
    index = Index(np.array(["tone.wav", "noise.wav"]),
                  normalise(embed([str(tmp_path / "tone.wav"), str(tmp_path / "noise.wav")],
                                  model=tiny_model_dir)))
    first = query_embedding(f"{tmp_path / 'q.wav'}@0-2.5", model=tiny_model_dir)
    last = query_embedding(f"{tmp_path / 'q.wav'}@3.5-6", model=tiny_model_dir)
    assert search(index, first, k=1)[0]["name"] == "tone.wav"
    assert search(index, last, k=1)[0]["name"] == "noise.wav"


def test_a_million_row_index_finds_the_row_nearest_its_query():
    # How long this takes is measured, with the host's CPU flags, by benchmarks/bench_search.py.
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((1_000_000, 128), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    target = 765_432
    q = emb[target] + 0.01 * rng.standard_normal(128, dtype=np.float32)
    scores, rows = top_k(q, emb, k=10)
    assert rows[0, 0] == target and scores[0, 0] > 0.99


def test_search_returns_typed_hits_that_still_read_like_the_old_dicts():
    import dataclasses
    import json

    from audioembed.search import SearchHit, SearchResults

    names = np.array(["dog.wav", "cat.wav", "car.wav"])
    index = Index(names, normalise(np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 3]], dtype=np.float32)))
    got = search(index, np.array([0.7, 0.7, 0.1]), k=2)
    assert isinstance(got, SearchResults) and len(got) == 2
    first, second = got  # a sequence of hits, best first
    assert isinstance(first, SearchHit) and got[0] == first and list(got[1:]) == [second]
    assert (first.rank, first.name, first.row) == (1, "cat.wav", 1)
    assert (second.rank, second.name, second.row) == (2, "dog.wav", 0)
    assert first.score == pytest.approx(float(normalise(np.array([0.7, 0.7, 0.1], np.float32)) @ index.embeddings[1]))
    assert got.names == ["cat.wav", "dog.wav"] and got.rows.tolist() == [1, 0]
    assert got.scores.dtype == np.float32 and got.scores[0] >= got.scores[1]
    # What callers of the old list of dicts wrote still works; to_dicts() is that list.
    assert first["name"] == "cat.wav" and first["rank"] == 1 and first["score"] == first.score
    with pytest.raises(KeyError):
        first["nope"]
    assert got.to_dicts() == [{"rank": 1, "score": first.score, "name": "cat.wav"},
                              {"rank": 2, "score": second.score, "name": "dog.wav"}]
    assert json.loads(json.dumps(got.to_dicts()))[0]["name"] == "cat.wav"
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.rank = 3


def test_a_slice_of_search_results_is_search_results():
    from audioembed.search import SearchHit, SearchResults

    names = np.array(["a.wav", "b.wav", "c.wav", "d.wav"])
    index = Index(names, normalise(np.eye(4, dtype=np.float32) + 0.1))
    got = search(index, np.array([1.0, 0.5, 0.2, 0.0]), k=4)
    assert got.names == ["a.wav", "b.wav", "c.wav", "d.wav"]
    part = got[1:3]
    assert isinstance(part, SearchResults) and len(part) == 2
    assert part.hits == got.hits[1:3] and part.names == ["b.wav", "c.wav"]
    assert part.rows.tolist() == [1, 2] and part.scores.dtype == np.float32
    assert part.to_dicts() == got.to_dicts()[1:3]  # ranks kept: 2 and 3
    backwards = got[::-1]
    assert isinstance(backwards, SearchResults) and backwards.names == got.names[::-1]
    assert isinstance(got[0], SearchHit) and got[-1].name == "d.wav"  # an index is still one hit


def test_a_range_query_reads_out_its_windows_as_the_layer_does():
    rng = np.random.default_rng(3)
    win = rng.standard_normal((4, 6)).astype(np.float32)
    ts = np.array([0.48, 1.44, 2.40, 3.36])
    pooled = range_mean(win, ts, 1.0, 2.5, layer="pooled")  # mean and max of windows 1 and 2
    want = np.concatenate([win[1:3].astype(np.float64).mean(0), win[1:3].max(0)])
    np.testing.assert_allclose(pooled, want / np.linalg.norm(want), rtol=1e-6)
    np.testing.assert_allclose(range_mean(win, ts, 1.0, 2.5), normalise(win[1:3].mean(0)), atol=1e-6)


def test_a_malformed_range_is_called_one(tmp_path):
    q = tmp_path / "q.wav"
    sf.write(q, np.zeros(1600, np.float32), 16000)
    for bad in ("-3-2", "3-", "1e2-x2", "5"):
        with pytest.raises(SearchError, match="is not a time range"):
            parse_query(f"{q}@{bad}")
    with pytest.raises(SearchError, match="is not a time range"):
        parse_query(f"{tmp_path / 'missing.wav'}@-3-2")  # range-like, even without the file
    assert parse_query(f"{q}@1.5-3") == (str(q), 1.5, 3.0)
    assert parse_query(f"{tmp_path}/x@y.wav") == (f"{tmp_path}/x@y.wav", None, None)
