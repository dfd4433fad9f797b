"""Exit codes and checks made before any work: early Ctrl-C, dangling or unwritable -o, Ctrl-C
and SIGTERM mid-run (130, 143, nothing partial left), stdin streams."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audioembed import embed, extract, shards
from helpers_cli import cli

REPO = Path(__file__).resolve().parents[1]


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


@pytest.mark.slow  # subprocesses
def test_a_truncated_wav_on_a_pipe_is_noticed(make_wav, tmp_path, tiny_model_dir):
    data = make_wav("a.wav", seconds=2.0).read_bytes()
    cut = data[:len(data) // 2]
    res = _extract_stdin(cut, tmp_path, "--strict", "--model", str(tiny_model_dir))
    assert res.returncode == 1 and b"truncated" in res.stderr and b"(--strict)" in res.stderr
    res = _extract_stdin(cut, tmp_path, "--model", str(tiny_model_dir))
    assert res.returncode == 0 and b"warning:" in res.stderr and b"truncated" in res.stderr
    res = _extract_stdin(data, tmp_path, "--strict", "--model", str(tiny_model_dir))
    assert res.returncode == 0 and b"truncated" not in res.stderr


@pytest.mark.slow  # subprocesses
def test_undecodable_bytes_on_a_pipe_are_not_called_empty(make_wav, tmp_path, tiny_model_dir):
    flac = make_wav("a.flac").read_bytes()
    for data in (flac, b"hello, not audio\n"):
        res = _extract_stdin(data, tmp_path, "--model", str(tiny_model_dir))
        assert res.returncode == 1 and b"empty file" not in res.stderr
        assert b"cannot be decoded from a pipe" in res.stderr, res.stderr


def test_an_unwritable_output_is_a_usage_error_before_any_work(make_wav, tiny_model_dir, tmp_path):
    wav = make_wav("a.wav", seconds=0.5)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in [blocker / "out", blocker / "e.npy", Path("/proc/audioembed-no-such/out")]:
        res = cli("extract", wav, "-o", out, "--model", "/nonexistent")
        # Exit 2 from the output check: the (missing) model is never reached.
        assert res.exit_code == 2 and "--model" not in res.output, res.output
        assert f"-o {out}: " in res.output and ".tmp" not in res.output
    res = cli("extract", wav, "-o", "", "--model", tiny_model_dir)
    assert res.exit_code == 2 and "output path is empty" in res.output
    assert not (Path.cwd() / "a.npy").exists()


def _interrupt_on(monkeypatch, name_suffix: str, action):
    """Run ``action`` when the frontend starts reading the input whose name ends so."""
    from audioembed import streaming

    real_update = streaming.SampleChecker.update

    def update(self, block):
        if self.name.endswith(name_suffix) and self.count == 0:
            action()
        real_update(self, block)

    monkeypatch.setattr(streaming.SampleChecker, "update", update)


@pytest.mark.parametrize("how,code", [("ctrl-c", 130), ("sigterm", 143)])
def test_interrupted_runs_exit_130_or_143_and_leave_no_partial_files(how, code, make_wav, tiny_model_dir,
                                                                      tmp_path, monkeypatch):
    import signal

    for i, k in enumerate("abc"):
        make_wav(f"d/{k}.wav", seconds=0.5, seed=i)

    def interrupt():
        if how == "ctrl-c":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the handler the command installs

    _interrupt_on(monkeypatch, "c.wav", interrupt)
    before = signal.getsignal(signal.SIGTERM)
    args = ["extract", str(tmp_path / "d"), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir),
            "-q", "--workers", "0", "--batch-size", "1"]  # a and b are written before c is read
    res = cli(*args)
    assert res.exit_code == code, res.output
    assert signal.getsignal(signal.SIGTERM) == before
    assert ("terminated (SIGTERM)" if how == "sigterm" else "interrupted (Ctrl-C)") in res.stderr
    # Inputs before the interrupt are written whole; nothing partial or temporary is left.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npy", "b.npy"]
    monkeypatch.undo()
    resumed = cli(*args, "--skip-existing")
    assert resumed.exit_code == 0, resumed.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npy", "b.npy", "c.npy"]


@pytest.mark.slow  # a subprocess
def test_dev_stdin_is_still_read_as_a_stream(make_wav, tiny_model_dir, tmp_path):
    wav = make_wav("in.wav", seconds=1.5)
    out = tmp_path / "e.npy"
    with open(wav, "rb") as stdin:
        res = subprocess.run([sys.executable, "-m", "audioembed", "extract", "/dev/stdin", "-o", str(out),
                              "--model", str(tiny_model_dir), "-q"], stdin=stdin, capture_output=True,
                             text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert res.returncode == 0, res.stderr
    np.testing.assert_allclose(np.load(out), embed(wav, model=tiny_model_dir), atol=1e-6)
