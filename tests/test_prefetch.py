"""Feature worker threads: the same chunks, batches and results whatever their number."""
from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from audioembed import SilentAudioWarning, api, embed, prefetch, streaming
from audioembed.streaming import FeatureChunk
from helpers_cli import cli
from helpers_hub import tiny_model


@pytest.fixture
def inputs(make_wav, tmp_path, monkeypatch):
    """A long file (many chunks), short ones, a silent one, a missing one, one with a NaN in its
    third block, and an in-memory array."""
    monkeypatch.setattr(streaming, "BLOCK_SECONDS", 1)
    nan = np.random.default_rng(9).standard_normal(5 * 16000).astype(np.float32) * 0.1
    nan[2 * 16000 + 5] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    return [make_wav("long.wav", seconds=7.3, sr=22050, channels=2, seed=1),
            make_wav("short.wav", seconds=0.3, seed=2),
            make_wav("silent.wav", np.zeros(12000, np.float32)),
            tmp_path / "missing.wav",
            tmp_path / "nan.wav",
            np.random.default_rng(3).standard_normal(3 * 8000).astype(np.float32) * 0.1,
            make_wav("mid.wav", seconds=2.4, sr=44100, seed=4)]


def signature(chunks: list[FeatureChunk]) -> list:
    return [(c.index, c.name, c.last, c.silent, str(c.error) if c.error else None,
             None if c.windows is None else c.windows.shape[0]) for c in chunks]


def test_chunks_do_not_depend_on_the_worker_count(inputs):
    ref = list(api.iter_features(inputs, 8000, 0.5, workers=0))
    assert [c.index for c in ref] == sorted(c.index for c in ref)
    assert sum(c.index == 0 for c in ref) > 3  # the long file came in several chunks
    for workers in (1, 2, 3, 10):
        got = list(api.iter_features(inputs, 8000, 0.5, workers=workers))
        assert signature(got) == signature(ref), workers
        for a, b in zip(got, ref):
            assert (a.windows is None) == (b.windows is None)
            if a.windows is not None:
                assert torch.equal(a.windows, b.windows)
                np.testing.assert_array_equal(a.timestamps, b.timestamps)


def test_embeddings_are_identical_with_0_and_2_workers(inputs, one_thread):
    model = tiny_model(2)
    good = [x for i, x in enumerate(inputs) if i not in (3, 4)]
    with pytest.warns(SilentAudioWarning):
        ref = embed(good, sr=8000, model=model, windows=True, batch_size=5, workers=0)
    with pytest.warns(SilentAudioWarning):
        got = embed(good, sr=8000, model=model, windows=True, batch_size=5, workers=2)
    np.testing.assert_array_equal(got.embedding, ref.embedding)
    for a, b in zip(got.window_embeddings, ref.window_embeddings):
        np.testing.assert_array_equal(a, b)
    results = [list(api.iter_embeddings(api.iter_features(inputs, 8000, 0.96, workers=w), model, 4))
               for w in (0, 2)]
    assert [(r.index, r.error is None, r.silent) for r in results[0]] == \
           [(r.index, r.error is None, r.silent) for r in results[1]] == \
           [(0, True, False), (1, True, False), (2, True, True), (3, False, False), (4, False, False),
            (5, True, False), (6, True, False)]


def test_extract_outputs_are_identical_with_0_and_2_workers(inputs, tiny_model_dir, tmp_path, one_thread):
    files = [str(p) for p in inputs if not isinstance(p, np.ndarray)]
    for w in (0, 2):
        res = cli("extract", *files, "--windows", "--workers", w, "--model", tiny_model_dir, "-o",
                  tmp_path / f"w{w}.npz", "-q")
        assert res.exit_code == 1  # the missing and the NaN file
        assert res.stderr.count("missing.wav") == 1 and "NaN" in res.stderr
    with np.load(tmp_path / "w0.npz") as a, np.load(tmp_path / "w2.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])


def _fake_chunks(produced: list, fail_at: int | None = None):
    def chunks_of(i: int):
        if i == fail_at:
            raise RuntimeError(f"bug while reading input {i}")
        for k in range(3):
            produced.append((i, k))
            yield FeatureChunk(i, f"in{i}", torch.zeros(4, 96, 64), np.zeros(4), last=k == 2)
    return chunks_of


def test_a_worker_error_is_raised_in_order():
    produced: list = []
    got = []
    with pytest.raises(RuntimeError, match="bug while reading input 3"):
        for chunk in prefetch.ordered_chunks(range(6), _fake_chunks(produced, fail_at=3), workers=2):
            got.append(chunk.index)
    assert got == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def _blocked_on_a_full_queue(thread: threading.Thread) -> bool:
    """Whether ``thread`` waits inside ``_Channel.put`` with no room for its chunk.

    Being inside the wait is not enough: a worker just notified by the consumer's last get
    is still there until it runs. With no room, though, only another get can release it.
    """
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        put = frame.f_back
        if frame.f_code is threading.Condition.wait.__code__ and put is not None \
                and put.f_code is prefetch._Channel.put.__code__:
            channel, size = put.f_locals["self"], put.f_locals["size"]
            return channel._held + size > channel._budget
        frame = put
    return False


def test_workers_stay_a_bounded_distance_ahead_and_stop_when_the_consumer_does():
    produced: list = []
    earlier = set(threading.enumerate())
    stream = prefetch.worker_chunks(100, _fake_chunks(produced), workers=2, ahead_windows=8)
    assert next(stream).index == 0
    workers = [t for t in threading.enumerate() if t not in earlier]
    assert len(workers) == 2
    deadline = time.monotonic() + 30
    while not all(_blocked_on_a_full_queue(t) for t in workers):
        assert all(t.is_alive() for t in workers), f"workers ran to the end: {len(produced)} chunks"
        assert time.monotonic() < deadline, f"workers still producing after 30 s: {len(produced)} chunks"
        time.sleep(0.001)
    # Production has stopped. Each worker holds 8 windows (2 chunks of 4) queued and has one
    # more chunk in hand; worker 0 also made the chunk the consumer took.
    assert sorted(produced) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0)]
    stream.close()
    # The workers themselves must end; other tests' threads may come and go meanwhile, so a
    # count of all threads would be flaky.
    deadline = time.monotonic() + 5
    while any(t.is_alive() for t in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.is_alive() for t in workers)


def test_bad_worker_counts(inputs, tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="workers"):
        list(api.iter_features(inputs[:1], None, 0.96, workers=-1))
    res = cli("extract", inputs[0], "--workers", "-1", "-o", tmp_path / "e.npy", "--model", tiny_model_dir)
    assert res.exit_code == 2
