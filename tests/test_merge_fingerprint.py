"""``merge`` joins only shards of one run: same input list, model, backend, layer and hop."""
from __future__ import annotations

import shutil

import numpy as np

from audioembed import shards
from helpers_cli import cli


def test_shards_made_before_and_after_the_input_list_changed_are_not_merged(make_wav, tmp_path,
                                                                             tiny_model_dir):
    for i in (1, 2, 3):
        make_wav(f"C/a{i}.wav", seconds=1.0, seed=i)
    common = ["--model", tiny_model_dir, "-q", "-o", tmp_path / "C.npz"]
    assert cli("extract", tmp_path / "C", "--shard", "0/2", *common).exit_code == 0
    shutil.copy(tmp_path / "C/a1.wav", tmp_path / "C/a0.wav")  # the list changes between shards
    assert cli("extract", tmp_path / "C", "--shard", "1/2", *common).exit_code == 0
    res = cli("merge", tmp_path / "C.shard-0-of-2.npz", tmp_path / "C.shard-1-of-2.npz",
              "-o", tmp_path / "Cm.npz")
    assert res.exit_code == 1 and "different runs" in res.stderr, res.stderr
    assert not (tmp_path / "Cm.npz").exists()


def test_shards_of_one_run_share_a_fingerprint_that_settings_change(make_wav, tmp_path,
                                                                    tiny_model_dir):
    for i in range(3):
        make_wav(f"in/c{i}.wav", seconds=1.0, seed=i)
    base = [tmp_path / "in", "--model", tiny_model_dir, "-q"]
    for k in range(2):
        cli("extract", *base, "--shard", f"{k}/2", "-o", tmp_path / "a.npz")
    cli("extract", *base, "--shard", "1/2", "--hop", "0.5", "-o", tmp_path / "h.npz")

    def fingerprint(name):
        with np.load(tmp_path / name) as z:
            return str(z[shards.FINGERPRINT_KEY])

    assert fingerprint("a.shard-0-of-2.npz") == fingerprint("a.shard-1-of-2.npz")
    assert fingerprint("h.shard-1-of-2.npz") != fingerprint("a.shard-1-of-2.npz")
    res = cli("merge", tmp_path / "a.shard-0-of-2.npz", tmp_path / "h.shard-1-of-2.npz",
              "-o", tmp_path / "m.npz")
    assert res.exit_code == 1 and "different runs" in res.stderr
    res = cli("merge", tmp_path / "a.shard-0-of-2.npz", tmp_path / "a.shard-1-of-2.npz",
              "-o", tmp_path / "m.npz")
    assert res.exit_code == 0
    with np.load(tmp_path / "m.npz") as z:
        assert shards.FINGERPRINT_KEY not in z.files  # a merged archive is an unsharded run's


def test_a_shard_without_a_fingerprint_is_refused(tmp_path):
    for k in range(2):
        np.savez(tmp_path / f"old.shard-{k}-of-2.npz", names=np.array([f"x{k}"]),
                 embeddings=np.zeros((1, 128), np.float32), indices=np.array([k]),
                 shard=np.array([k, 2]))
    res = cli("merge", *sorted(tmp_path.glob("old.shard-*.npz")), "-o", tmp_path / "m.npz")
    assert res.exit_code == 1 and shards.FINGERPRINT_KEY in res.stderr
