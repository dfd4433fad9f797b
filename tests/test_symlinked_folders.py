"""Folders (-r) and globs follow links to folders, each real folder once, and end on link loops;
a named input that is a link loop is called one."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audioembed import extract
from audioembed.extract import expand_inputs
from helpers_cli import cli

REPO = Path(__file__).resolve().parents[1]


def _names(sources) -> list[str]:
    return [s.rel.as_posix() for s in sources]


def test_recursive_follows_a_linked_subfolder(make_wav, tiny_model_dir, tmp_path):
    make_wav("S/real/a.wav", seconds=0.5)
    make_wav("E/b.wav", seconds=0.5, seed=1)
    os.symlink("../E", tmp_path / "S/linked")
    sources, failures = expand_inputs([tmp_path / "S"], recursive=True)
    assert _names(sources) == ["linked/b.wav", "real/a.wav"] and failures == []
    out = tmp_path / "out"
    res = cli("extract", tmp_path / "S", "-r", "-o", out, "--model", tiny_model_dir, "-q", "--workers", "0")
    assert res.exit_code == 0, res.output
    assert np.load(out / "linked/b.npy").shape == (128,) and (out / "real/a.npy").exists()


def test_a_folder_reached_twice_is_searched_once_and_named(make_wav, tiny_model_dir, tmp_path):
    make_wav("S/d/x.wav", seconds=0.5)
    os.symlink(".", tmp_path / "S/d/l1")         # loops
    os.symlink("..", tmp_path / "S/d/up")        # back to an ancestor
    os.symlink("d", tmp_path / "S/second")       # a second way to the same folder
    repeated = []
    sources, _ = expand_inputs([tmp_path / "S"], recursive=True, repeated=repeated)
    assert _names(sources) == ["d/x.wav"]
    assert sorted(p.name for p in repeated) == ["l1", "second", "up"]
    res = cli("extract", tmp_path / "S", "-r", "-o", tmp_path / "o", "--model", tiny_model_dir, "--workers",
              "0")
    assert res.exit_code == 0, res.output
    assert "did not search 3 linked folders again" in res.stderr and "l1" in res.stderr


@pytest.mark.slow  # a subprocess
def test_a_glob_over_self_links_ends_and_lists_each_file_once(make_wav, tmp_path):
    make_wav("G/d/x.wav", seconds=0.2)
    make_wav("G/top.wav", seconds=0.2)
    os.symlink(".", tmp_path / "G/d/l1")
    os.symlink(".", tmp_path / "G/d/l2")
    # glob.glob itself runs for ever here; a subprocess so that a hang fails instead of blocking.
    code = ("import sys; from audioembed.extract import expand_inputs; "
            "s, f = expand_inputs([sys.argv[1]]); print([x.rel.as_posix() for x in s], f)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "G/**/*.wav")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['d/x.wav', 'top.wav'] []"


def test_glob_matches_as_glob_does(tmp_path, monkeypatch):
    for name in ["a/x.wav", "a/b/y.wav", "a/b/c/z.wav", "a/.h/q.wav", "a/b/.r.wav", "top.wav",
                 "a/b2/k.flac", "a/b/notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    monkeypatch.chdir(tmp_path)
    cases = {"*.wav": ["top.wav"], "a/**/*.wav": ["a/b/c/z.wav", "a/b/y.wav", "a/x.wav"],
             "a/*/*": ["a/b2/k.flac", "a/b/y.wav"], "**/c/*": ["a/b/c/z.wav"],
             "a/.h/*.wav": ["a/.h/q.wav"], "a/b/.*": ["a/b/.r.wav"], "a/[bc]/*.wav": ["a/b/y.wav"]}
    for pattern, want in cases.items():
        sources, failures = expand_inputs([pattern])
        assert sorted(s.path.as_posix() for s in sources) == sorted(want), pattern
    sources, _ = expand_inputs(["a/**/*.wav"])
    assert _names(sources) == ["b/c/z.wav", "b/y.wav", "x.wav"]  # relative to the fixed part


def test_symlink_loop_is_not_called_broken(tiny_model_dir, tmp_path):
    os.symlink(tmp_path / "loop_b.wav", tmp_path / "loop_a.wav")
    os.symlink(tmp_path / "loop_a.wav", tmp_path / "loop_b.wav")
    report = extract.run([tmp_path / "loop_a.wav"], tmp_path / "e.npy", model=tiny_model_dir)
    assert report.failures == [f"{tmp_path / 'loop_a.wav'}: symbolic link loop (the link points, in "
                               "the end, back to itself)"]
