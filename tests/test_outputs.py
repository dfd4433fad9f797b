"""What extract writes: an existing output fails its input alone and a file written meanwhile by
another run is never replaced; the longest legal names; a failed or partial write leaves nothing
behind, and an archive that cannot be written is saved elsewhere; --skip-existing resumes; the
temporary files of killed runs are removed."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from audioembed import embed, extract, outputs
from helpers_cli import cli


def test_existing_output_fails_that_input_only(make_wav, tiny_model_dir, tmp_path):
    make_wav("in/a.wav", seconds=0.5, seed=1)
    make_wav("in/b.wav", seconds=0.5, seed=2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b.npy").write_bytes(b"keep")
    report = extract.run([tmp_path / "in"], tmp_path / "out", model=tiny_model_dir)
    assert report.succeeded == 1
    assert report.failures == [f"{tmp_path / 'out/b.npy'}: exists; pass --overwrite to replace it "
                               f"(input {tmp_path / 'in/b.wav'})"]
    assert (tmp_path / "out" / "b.npy").read_bytes() == b"keep"
    assert np.load(tmp_path / "out" / "a.npy").shape == (128,)


def test_longest_legal_file_names_are_written(make_wav, tiny_model_dir, tmp_path):
    name = "n" * 251 + ".wav"  # 255 bytes, the most a file name may hold; its output is too
    wav = make_wav(f"d/{name}", seconds=0.5)
    report = extract.run([wav], tmp_path / "out", model=tiny_model_dir)
    assert report.failures == [] and (tmp_path / "out" / ("n" * 251 + ".npy")).exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["n" * 251 + ".npy"]
    report = extract.run([wav], tmp_path / "win", model=tiny_model_dir, windows=True)
    [reason] = report.failures  # STEM.windows.npy cannot exist: said before any work
    assert "would be 263 bytes, more than a file name may hold (255)" in reason


def test_a_failed_write_names_the_real_file(make_wav, tiny_model_dir, tmp_path):
    wav = make_wav("a.wav", seconds=0.5)
    (tmp_path / "out" / "a.npy" / "occupied").mkdir(parents=True)  # a folder where a.npy goes
    report = extract.run([wav], tmp_path / "out", model=tiny_model_dir, overwrite=True)
    [reason] = report.failures
    assert reason.startswith(f"{wav}: cannot write {tmp_path / 'out' / 'a.npy'}: ")
    assert ".tmp" not in reason
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npy"]  # no temp left


def test_an_archive_that_cannot_be_written_is_rescued(make_wav, tiny_model_dir, tmp_path, monkeypatch):
    wavs = [make_wav(f"d/{k}.wav", seconds=0.5, seed=i) for i, k in enumerate("ab")]
    target = tmp_path / "all.npz"
    real_atomic_write = outputs.atomic_write

    def disk_full_at_target(path, write, fsync=False, **kwargs):
        if Path(path) == target:
            raise OSError(28, "No space left on device", str(path))
        real_atomic_write(path, write, fsync, **kwargs)

    monkeypatch.setattr(outputs, "atomic_write", disk_full_at_target)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "rescue"))
    (tmp_path / "rescue").mkdir()
    report = extract.run([tmp_path / "d"], target, model=tiny_model_dir)
    [reason] = report.failures
    rescued = tmp_path / "rescue" / f"all.rescued-{os.getpid()}.npz"
    assert reason == (f"{target}: cannot write: No space left on device; the 2 embeddings were "
                      f"saved to {rescued} instead")
    z = np.load(rescued)
    assert z["names"].tolist() == [str(w) for w in wavs]
    np.testing.assert_allclose(z["embeddings"], embed(wavs, model=tiny_model_dir), atol=1e-6)


@pytest.mark.usefixtures("one_thread")  # many small forward passes
def test_a_full_disk_leaves_no_orphan_window_files(make_wav, tmp_path, tiny_model_dir, monkeypatch):
    make_wav("d/a.wav", seconds=1.0)
    real_save = np.save
    calls = []

    def save(f, array, **kwargs):
        calls.append(array.shape)
        if len(calls) == 3:  # windows and timestamps written, then the segment embedding: full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(f, array, **kwargs)

    monkeypatch.setattr(np, "save", save)
    out = tmp_path / "out"
    res = cli("extract", tmp_path / "d", "-o", out, "--windows", "--model", tiny_model_dir, "-q",
              "--workers", "0")
    assert res.exit_code == 1 and "No space left on device" in res.stderr, res.output
    assert sorted(p.name for p in out.iterdir()) == []  # no .windows/.timestamps, no temp files
    monkeypatch.undo()
    res = cli("extract", tmp_path / "d", "-o", out, "--windows", "--model", tiny_model_dir, "-q",
              "--workers", "0")
    assert res.exit_code == 0, res.output  # nothing left in the way of the rerun
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "a.timestamps.npy", "a.windows.npy"]


@pytest.mark.usefixtures("one_thread")  # many small forward passes
def test_an_output_written_meanwhile_by_another_run_is_not_replaced(make_wav, tmp_path, tiny_model_dir,
                                                                    monkeypatch):
    make_wav("d/a.wav", seconds=1.0)
    out = tmp_path / "out"
    real = extract._write_item

    def other_run_first(stem, res, windows, report, replace):
        stem.parent.mkdir(parents=True, exist_ok=True)
        np.save(f"{stem}.npy", np.full(128, 7, np.float32))  # the other run's, after our plan
        real(stem, res, windows, report, replace)

    monkeypatch.setattr(extract, "_write_item", other_run_first)
    report = extract.run([tmp_path / "d"], out, model=tiny_model_dir, workers=0)
    assert report.exit_code == 1 and report.succeeded == 0
    assert "exists; pass --overwrite" in report.failures[0], report.failures
    assert (np.load(out / "a.npy") == 7).all()  # the other run's file stands
    assert [p.name for p in out.iterdir()] == ["a.npy"]
    # An npz archive likewise: the other run's stands, this run's is rescued elsewhere.
    real_archive = extract._write_archive

    def other_archive_first(output, *args, **kwargs):
        np.savez(output, names=np.array(["theirs"]))
        real_archive(output, *args, **kwargs)

    monkeypatch.setattr(extract, "_write_archive", other_archive_first)
    monkeypatch.chdir(tmp_path)
    report = extract.run([tmp_path / "d"], tmp_path / "all.npz", model=tiny_model_dir, workers=0)
    assert report.exit_code == 1 and "exists" in report.failures[0]
    assert list(np.load(tmp_path / "all.npz")["names"]) == ["theirs"]
    for rescued in report.outputs:
        rescued.unlink()


def test_exclusive_placement_without_hard_links_still_refuses_an_existing_file(tmp_path, monkeypatch):
    def no_links(src, dst, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    outputs.save_npys([(tmp_path / "a.npy", np.zeros(2))], replace=False)
    with pytest.raises(FileExistsError):
        outputs.save_npys([(tmp_path / "a.npy", np.ones(2))], replace=False)
    assert (np.load(tmp_path / "a.npy") == 0).all()
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_skip_existing_resumes_only_missing_or_incomplete_outputs(make_wav, tiny_model_dir, tmp_path):
    wavs = [make_wav(f"d/{k}.wav", seconds=0.5, seed=i) for i, k in enumerate("abcd")]
    out = tmp_path / "out"
    assert extract.run([tmp_path / "d"], out, model=tiny_model_dir, windows=True).succeeded == 4
    (out / "b.npy").unlink()  # interrupted before the input's last file
    (out / "c.npy").write_bytes((out / "c.npy").read_bytes()[:-8])  # not a whole .npy
    mtime_a = (out / "a.npy").stat().st_mtime_ns
    report = extract.run([tmp_path / "d"], out, model=tiny_model_dir, windows=True, skip_existing=True)
    assert (report.succeeded, report.skipped, report.failures) == (2, 2, [])
    assert (out / "a.npy").stat().st_mtime_ns == mtime_a
    for w in wavs:
        np.testing.assert_allclose(np.load(out / f"{w.stem}.npy"), embed(w, model=tiny_model_dir), atol=1e-6)
    with pytest.raises(extract.UsageError, match="contradict"):
        extract.run([tmp_path / "d"], out, model=tiny_model_dir, skip_existing=True, overwrite=True)
    with pytest.raises(extract.UsageError, match="npy outputs"):
        extract.run([tmp_path / "d"], tmp_path / "e.npz", model=tiny_model_dir, skip_existing=True)


@pytest.mark.slow  # a subprocess
def test_stale_temp_files_of_killed_runs_are_removed(make_wav, tiny_model_dir, tmp_path):
    import subprocess
    import sys
    import time

    wav = make_wav("d/a.wav", seconds=0.5)
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    host = outputs._host_tag()
    stale = out / f".audioembed-{host}-{dead_pid}-0123abcd.tmp"  # its process is gone
    live = out / f".audioembed-{host}-{os.getpid()}-0123abcd.tmp"  # a live process's write
    old_style = out / ".x.npy.89abcdef.tmp"  # the long names of earlier versions, long untouched
    recent_old_style = out / ".y.npy.89abcdef.tmp"
    user_file = out / ".notes.tmp"  # not ours
    for p in (stale, live, old_style, recent_old_style, user_file):
        p.write_bytes(b"partial")
    long_ago = time.time() - 2 * outputs.STALE_SECONDS
    os.utime(old_style, (long_ago, long_ago))
    report = extract.run([wav], out, model=tiny_model_dir)
    assert report.failures == []
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["a.npy", live.name, recent_old_style.name, user_file.name])
    assert report.notes == [f"removed 2 temporary files left by an interrupted run in {out}"]
