"""Exit codes and checks made before any work: early Ctrl-C, dangling -o links, stdin streams."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from audioembed import extract, shards
from audioembed.cli import main

REPO = Path(__file__).resolve().parents[1]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_ctrl_c_before_the_command_handles_it_exits_130(make_wav, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shards, "resolve_shard", interrupted)  # the first thing extract does
    res = cli("extract", make_wav("a.wav"), "-o", tmp_path / "a.npy")
    assert res.exit_code == 130 and "Aborted!" not in res.output and "interrupted" in res.stderr


@pytest.mark.parametrize("out", ["out", "all.npz", "one.npy"])
def test_a_dangling_output_link_fails_before_any_work(out, make_wav, tmp_path, monkeypatch,
                                                      tiny_model_dir):
    wav = make_wav("a.wav")
    (tmp_path / out).symlink_to(tmp_path / "nowhere")

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before -o was checked")

    monkeypatch.setattr(extract, "load_model_for_cli", no_load)
    res = cli("extract", wav, "-o", tmp_path / out, "--model", tiny_model_dir)
    assert res.exit_code == 2 and "does not exist" in res.stderr, res.output


def _extract_stdin(data: bytes, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "audioembed", "extract", "/dev/stdin", "-o",
                           str(tmp_path / "s.npy"), "-q", "--overwrite", *args], input=data,
                          capture_output=True, env=env, timeout=300)


def test_a_truncated_wav_on_a_pipe_is_noticed(make_wav, tmp_path, tiny_model_dir):
    data = make_wav("a.wav", seconds=2.0).read_bytes()
    cut = data[:len(data) // 2]
    res = _extract_stdin(cut, tmp_path, "--strict", "--model", str(tiny_model_dir))
    assert res.returncode == 1 and b"truncated" in res.stderr and b"(--strict)" in res.stderr
    res = _extract_stdin(cut, tmp_path, "--model", str(tiny_model_dir))
    assert res.returncode == 0 and b"warning:" in res.stderr and b"truncated" in res.stderr
    res = _extract_stdin(data, tmp_path, "--strict", "--model", str(tiny_model_dir))
    assert res.returncode == 0 and b"truncated" not in res.stderr


def test_undecodable_bytes_on_a_pipe_are_not_called_empty(make_wav, tmp_path, tiny_model_dir):
    flac = make_wav("a.flac").read_bytes()
    for data in (flac, b"hello, not audio\n"):
        res = _extract_stdin(data, tmp_path, "--model", str(tiny_model_dir))
        assert res.returncode == 1 and b"empty file" not in res.stderr
        assert b"cannot be decoded from a pipe" in res.stderr, res.stderr
