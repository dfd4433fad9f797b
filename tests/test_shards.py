"""Sharded extraction (--shard K/N, torchrun's RANK/WORLD_SIZE) and ``audioembed merge``."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audioembed import extract, shards
from helpers_cli import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(make_wav, tmp_path):
    """Seven clips of different lengths, one silent, in a folder with a subfolder."""
    lengths = [0.4, 2.5, 1.0, 3.3, 0.9, 1.7, 2.0]
    for i, s in enumerate(lengths):
        make_wav(f"in/{'sub/' if i % 3 == 0 else ''}c{i}.wav", seconds=s, seed=i)
    make_wav("in/quiet.wav", np.zeros(8000, np.float32))
    return tmp_path / "in"


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def assert_same_archive(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_parse_and_resolve_shard():
    assert shards.parse_shard("1/4") == shards.Shard(1, 4)
    assert str(shards.parse_shard(" 0 / 2 ")) == "0/2"
    for bad in ["4/4", "-1/2", "1", "a/b", "1/0", "1/2/3"]:
        with pytest.raises(ValueError, match="K/N|0..N-1"):
            shards.parse_shard(bad)
    assert shards.resolve_shard(None, {}) is None
    assert shards.resolve_shard(None, {"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert shards.resolve_shard(None, {"WORLD_SIZE": "3", "RANK": "2"}) == shards.Shard(2, 3)
    assert shards.resolve_shard("1/2", {}) == shards.Shard(1, 2)
    with pytest.raises(ValueError, match="torchrun"):
        shards.resolve_shard("1/2", {"WORLD_SIZE": "2", "RANK": "0"})
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    assert shards.rank_device("cuda", env) == "cuda:1"
    assert shards.rank_device("cuda:0", env) == "cuda:0" and shards.rank_device(None, env) is None
    assert shards.rank_device("cuda", {}) == "cuda"
    assert shards.Shard(2, 8).archive(Path("o/all.npz")) == Path("o/all.shard-2-of-8.npz")


@pytest.mark.parametrize("batch", [1, 64])
def test_npz_shards_merge_into_the_single_process_archive(folder, tiny_model_dir, tmp_path, batch,
                                                          one_thread):
    common = [folder, "-r", "--windows", "--hop", "0.5", "--batch-size", batch, "--model", tiny_model_dir, "-q"]
    assert cli("extract", *common, "-o", tmp_path / "one.npz").exit_code == 0
    for k in range(3):
        res = cli("extract", *common, "--shard", f"{k}/3", "-o", tmp_path / "all.npz")
        assert res.exit_code == 0, res.output
        assert load(tmp_path / f"all.shard-{k}-of-3.npz")["indices"].tolist() == list(range(k, 8, 3))
    shard_files = sorted(tmp_path.glob("all.shard-*-of-3.npz"))[::-1]  # order does not matter
    res = cli("merge", *shard_files, "-o", tmp_path / "all.npz")
    assert res.exit_code == 0 and "merged 8 inputs from 3 shards" in res.stderr
    got, want = load(tmp_path / "all.npz"), load(tmp_path / "one.npz")
    if batch == 1:  # every forward has one window: the same numbers to the bit
        assert_same_archive(got, want)
    else:  # windows share batches differently: float rounding of the batched convolutions
        for k in ("embeddings", "window_embeddings"):
            np.testing.assert_allclose(got.pop(k), want.pop(k), rtol=0, atol=1e-6)
        assert_same_archive(got, want)


def test_npy_shards_write_the_single_process_files(folder, tiny_model_dir, tmp_path, one_thread):
    common = [folder, "-r", "--windows", "--batch-size", 1, "--model", tiny_model_dir, "-q"]
    assert cli("extract", *common, "-o", tmp_path / "one").exit_code == 0
    for k in range(2):
        res = cli("extract", *common, "--shard", f"{k}/2", "-o", tmp_path / "two")
        assert res.exit_code == 0, res.output
    one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.npy"))
    two = sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.npy"))
    assert one == two and len(one) == 3 * 8
    for rel in one:
        np.testing.assert_array_equal(np.load(tmp_path / "two" / rel), np.load(tmp_path / "one" / rel))


def test_a_shard_reports_only_its_own_inputs(folder, tiny_model_dir, tmp_path, make_wav):
    # sub/c0.wav and the file c0.wav named on the command line both map to out/c0.npy... in
    # different shards; the collision is decided over the whole list, as in one process.
    clash = make_wav("other/c0.wav", seconds=0.5)
    reports = [extract.run([folder / "sub" / "c0.wav", clash], tmp_path / "out",
                           model=tiny_model_dir, shard=shards.Shard(k, 2)) for k in range(2)]
    assert reports[0].failures == [] and reports[0].succeeded == 1
    assert len(reports[1].failures) == 1 and "would also be written" in reports[1].failures[0]
    # Silence is reported by the shard that embedded it.
    quiet = [extract.run([folder], tmp_path / "q", model=tiny_model_dir, shard=shards.Shard(k, 4))
             for k in range(4)]
    assert sum(len(r.warnings) for r in quiet) == 1


def test_an_empty_shard_still_writes_its_archive(make_wav, tiny_model_dir, tmp_path):
    wav = make_wav("only.wav", seconds=1.0)
    for k in range(2):
        assert cli("extract", wav, "--shard", f"{k}/2", "-o", tmp_path / "e.npz", "--model",
                   tiny_model_dir, "-q").exit_code == 0
    empty = load(tmp_path / "e.shard-1-of-2.npz")
    assert empty["embeddings"].shape == (0, 128) and empty["names"].shape == (0,)
    assert cli("merge", *tmp_path.glob("e.shard-*.npz"), "-o", tmp_path / "e.npz").exit_code == 0
    assert load(tmp_path / "e.npz")["embeddings"].shape == (1, 128)


def test_merge_refuses_what_is_not_one_whole_run(folder, tiny_model_dir, tmp_path):
    base = [folder, "--model", tiny_model_dir, "-q"]
    for k in range(2):
        cli("extract", *base, "--shard", f"{k}/2", "-o", tmp_path / "a.npz")
    cli("extract", *base, "--windows", "--shard", "1/2", "-o", tmp_path / "w.npz")
    cli("extract", *base, "--shard", "0/3", "-o", tmp_path / "t.npz")
    np.savez(tmp_path / "plain.npz", names=np.array(["x"]), embeddings=np.zeros((1, 128)))
    (tmp_path / "junk.npz").write_text("not a zip")
    a0, a1 = tmp_path / "a.shard-0-of-2.npz", tmp_path / "a.shard-1-of-2.npz"
    cases = {
        "missing shard 1 of 2": [a0],
        "given twice": [a0, a1, a0],
        "shards of 2": [a0, a1, tmp_path / "t.shard-0-of-3.npz"],
        "with --windows and some without": [a0, tmp_path / "w.shard-1-of-2.npz"],
        "not a shard archive": [a0, tmp_path / "plain.npz"],
        "cannot be read": [tmp_path / "junk.npz"],
    }
    for phrase, files in cases.items():
        res = cli("merge", *files, "-o", tmp_path / "m.npz")
        assert res.exit_code == 1 and phrase in res.stderr, (phrase, res.stderr)
        assert not (tmp_path / "m.npz").exists()
    assert cli("merge", a0, a1, "-o", tmp_path / "m.npz").exit_code == 0
    res = cli("merge", a0, a1, "-o", tmp_path / "m.npz")
    assert res.exit_code == 1 and "exists" in res.stderr
    assert cli("merge", a0, a1, "-o", tmp_path / "m.npz", "--overwrite").exit_code == 0


def test_shard_option_inside_torchrun_is_a_usage_error(make_wav, tiny_model_dir, tmp_path):
    wav = make_wav("a.wav")
    res = cli("extract", wav, "--shard", "0/2", "-o", tmp_path / "e.npz", "--model", tiny_model_dir,
              env={"WORLD_SIZE": "2", "RANK": "0"})
    assert res.exit_code == 2 and "torchrun" in res.stderr


@pytest.mark.slow  # torchrun
def test_torchrun_two_ranks_then_merge(folder, tiny_model_dir, tmp_path, one_thread):
    common = [str(folder), "-r", "--windows", "--batch-size", "1", "--model", str(tiny_model_dir), "-q"]
    assert cli("extract", *common, "-o", tmp_path / "one.npz").exit_code == 0
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
         "-m", "audioembed.cli", "extract", *common, "-o", str(tmp_path / "all.npz")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers: its own session
        proc.communicate()
        raise
    assert proc.returncode == 0, out[-3000:]
    res = cli("merge", tmp_path / "all.shard-0-of-2.npz", tmp_path / "all.shard-1-of-2.npz",
              "-o", tmp_path / "all.npz")
    assert res.exit_code == 0, res.output
    assert_same_archive(load(tmp_path / "all.npz"), load(tmp_path / "one.npz"))
