"""``audioembed extract`` and ``audioembed info``: outputs, layouts, exit codes, progress; a batch
with bad inputs writes every good one and lists each bad one on a line of its own."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audioembed import backends, embed, extract, frontend, outputs, precision
from helpers_cli import cli


def assert_unit(e: np.ndarray) -> None:
    assert e.dtype == np.float32 and np.isfinite(e).all()
    np.testing.assert_allclose(np.linalg.norm(e, axis=-1), 1.0, atol=1e-4)


def test_single_file(tiny_model_dir, make_wav, tmp_path):
    wav = make_wav("clip.wav", seconds=2.5)
    out = tmp_path / "emb.npy"
    res = cli("extract", wav, "-o", out, "--model", tiny_model_dir, "-q")
    assert res.exit_code == 0, res.output
    e = np.load(out)
    assert e.shape == (128,)
    assert_unit(e)
    np.testing.assert_allclose(e, embed(wav, model=tiny_model_dir), atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.wav", "emb.npy"]  # no temp files
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp file's private 0600


def test_short_clip_gives_one_window(tiny_model_dir, make_wav, tmp_path):
    wav = make_wav("blip.wav", seconds=0.3)
    res = cli("extract", wav, "-o", tmp_path / "e.npy", "--windows", "--model", tiny_model_dir, "-q")
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "e.windows.npy").shape == (1, 128)
    assert np.load(tmp_path / "e.timestamps.npy").tolist() == [0.475]
    assert_unit(np.load(tmp_path / "e.npy"))


def test_folder_top_level_and_recursive(tiny_model_dir, make_wav, tmp_path):
    for name in ["rec/b.wav", "rec/a.flac", "rec/sub/c.wav", "rec/sub/deep/d.ogg", "rec/.hidden.wav"]:
        make_wav(name, seconds=0.5)
    (tmp_path / "rec" / "notes.txt").write_text("not audio")
    top = cli("extract", tmp_path / "rec", "-o", tmp_path / "top", "--model", tiny_model_dir, "-q")
    assert top.exit_code == 0, top.output
    assert sorted(p.relative_to(tmp_path / "top").as_posix() for p in (tmp_path / "top").rglob("*")
                  if p.is_file()) == ["a.npy", "b.npy"]

    rec = cli("extract", tmp_path / "rec", "-r", "-o", tmp_path / "all", "--model", tiny_model_dir, "-q")
    assert rec.exit_code == 0, rec.output
    written = sorted(p.relative_to(tmp_path / "all").as_posix() for p in (tmp_path / "all").rglob("*")
                     if p.is_file())
    assert written == ["a.npy", "b.npy", "sub/c.npy", "sub/deep/d.npy"]
    np.testing.assert_allclose(np.load(tmp_path / "all/sub/deep/d.npy"),
                               embed(tmp_path / "rec/sub/deep/d.ogg", model=tiny_model_dir), atol=1e-6)


def test_folder_without_top_level_audio_hints_recursive(tiny_model_dir, make_wav, tmp_path):
    make_wav("rec/sub/c.wav", seconds=0.5)
    res = cli("extract", tmp_path / "rec", "-o", tmp_path / "out", "--model", tiny_model_dir, "-q")
    assert res.exit_code == 1
    assert "no audio files" in res.stderr and "--recursive" in res.stderr


def test_npz_with_windows(tiny_model_dir, make_wav, tmp_path):
    paths = [make_wav("d/x.wav", seconds=3.0, seed=1), make_wav("d/y.wav", seconds=0.4, seed=2),
             make_wav("d/z.wav", seconds=2.0, seed=3)]
    out = tmp_path / "all.npz"
    res = cli("extract", tmp_path / "d", "--format", "npz", "--windows", "--hop", "0.5",
              "-o", out, "--model", tiny_model_dir, "-q", "--batch-size", "3")
    assert res.exit_code == 0, res.output
    z = np.load(out)  # loads without allow_pickle
    assert sorted(z.files) == ["embeddings", "names", "offsets", "timestamps", "window_embeddings"]
    assert z["names"].tolist() == [str(p) for p in paths]
    assert z["embeddings"].shape == (3, 128)
    assert_unit(z["embeddings"])
    ref = embed(paths, model=tiny_model_dir, hop=0.5, windows=True)
    np.testing.assert_allclose(z["embeddings"], ref.embedding, atol=1e-6)
    off = z["offsets"]
    assert off.tolist() == [0, *np.cumsum([len(t) for t in ref.timestamps]).tolist()]
    assert z["window_embeddings"].shape == (off[-1], 128) and z["timestamps"].shape == (off[-1],)
    for i in range(3):
        np.testing.assert_allclose(z["window_embeddings"][off[i]:off[i + 1]], ref.window_embeddings[i],
                                   atol=1e-6)
        np.testing.assert_array_equal(z["timestamps"][off[i]:off[i + 1]], ref.timestamps[i])


def test_npz_is_inferred_from_the_output_name(tiny_model_dir, make_wav, tmp_path):
    make_wav("d/x.wav", seconds=0.5)
    res = cli("extract", tmp_path / "d", "-o", tmp_path / "e.npz", "--model", tiny_model_dir, "-q")
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "e.npz")["embeddings"].shape == (1, 128)


def test_npy_windows_layout_in_a_folder(tiny_model_dir, make_wav, tmp_path):
    make_wav("d/x.wav", seconds=3.0)
    res = cli("extract", tmp_path / "d", "--windows", "-o", tmp_path / "out", "--model", tiny_model_dir, "-q")
    assert res.exit_code == 0, res.output
    w = np.load(tmp_path / "out/x.windows.npy")
    t = np.load(tmp_path / "out/x.timestamps.npy")
    seg = np.load(tmp_path / "out/x.npy")
    assert w.shape == (3, 128) and t.shape == (3,)
    np.testing.assert_allclose(t, [0.475, 1.435, 2.395])
    mean = w.astype(np.float64).mean(0)
    np.testing.assert_allclose(seg, mean / np.linalg.norm(mean), atol=1e-6)


def test_quoted_glob_mirrors_below_its_fixed_prefix(tiny_model_dir, make_wav, tmp_path):
    for name in ["data/a/x1.wav", "data/b/x2.wav", "data/b/y.wav", "data/a/x3.txt"]:
        make_wav(name, seconds=0.5) if name.endswith(".wav") else (tmp_path / name).write_text("x")
    pattern = str(tmp_path / "data" / "*" / "x*")
    res = cli("extract", pattern, "-o", tmp_path / "out", "--model", tiny_model_dir, "-q")
    assert res.exit_code == 0, res.output
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.npy")) \
        == ["a/x1.npy", "b/x2.npy"]
    missing = cli("extract", str(tmp_path / "nothing*.wav"), "-o", tmp_path / "o2", "--model", tiny_model_dir)
    assert missing.exit_code == 1 and "no audio files match" in missing.stderr


def test_overwrite(tiny_model_dir, make_wav, tmp_path):
    make_wav("d/a.wav", seconds=0.5, seed=1)
    make_wav("d/b.wav", seconds=0.5, seed=2)
    out = tmp_path / "out"
    out.mkdir()
    np.save(out / "a.npy", np.zeros(3))
    res = cli("extract", tmp_path / "d", "-o", out, "--model", tiny_model_dir, "-q")
    assert res.exit_code == 1
    assert f"{out / 'a.npy'}: exists; pass --overwrite" in res.stderr
    assert np.load(out / "a.npy").tolist() == [0, 0, 0]  # untouched
    assert np.load(out / "b.npy").shape == (128,)  # the other input is still written

    res = cli("extract", tmp_path / "d", "-o", out, "--model", tiny_model_dir, "-q", "--overwrite")
    assert res.exit_code == 0, res.output
    assert np.load(out / "a.npy").shape == (128,)

    np.savez(tmp_path / "e.npz", names=np.array(["old"]))
    res = cli("extract", tmp_path / "d", "-o", tmp_path / "e.npz", "--model", tiny_model_dir, "-q")
    assert res.exit_code == 1 and "e.npz: exists" in res.stderr
    assert np.load(tmp_path / "e.npz")["names"].tolist() == ["old"]


def test_exit_codes(tiny_model_dir, make_wav, tmp_path):
    good = make_wav("good.wav", seconds=0.5)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"")
    model = ["--model", tiny_model_dir, "-q"]
    assert cli("extract", good, "-o", tmp_path / "g.npy", *model).exit_code == 0
    some = cli("extract", good, bad, "-o", tmp_path / "o", *model)
    assert some.exit_code == 1 and (tmp_path / "o/good.npy").exists()
    usage = [
        ["extract", good, "-o", tmp_path / "u1.npy", "--batch-size", "0", *model],
        ["extract", good, "-o", tmp_path / "u2.npy", "--hop", "abc", *model],
        ["extract", good, "-o", tmp_path / "u3.npy", "--hop", "0.001", *model],
        ["extract", good, "-o", tmp_path / "u4.npy", "--format", "wav", *model],
        ["extract", good, *model],  # no -o
        ["extract", "-o", tmp_path / "u5.npy", *model],  # no input
        ["extract", good, good.with_name("x.wav"), "-o", tmp_path / "u6.npy", *model],
        ["extract", good, "-o", tmp_path / "u7.npy", "--model", tmp_path / "no_such_model"],
        ["extract", good, "-o", tmp_path / "u8.npy", "--model", tiny_model_dir, "--device", "nonsense"],
        ["extract", good, "-o", tmp_path / "u9.npy", "--format", "npz", *model],
        ["bogus-command"],
    ]
    make_wav("x.wav", seconds=0.5)
    for args in usage:
        res = cli(*args)
        assert res.exit_code == 2, (args, res.output)
    assert not list(tmp_path.glob("u*.npy"))


def test_several_files_into_one_npy_is_a_usage_error(tiny_model_dir, make_wav, tmp_path):
    make_wav("d/a.wav", seconds=0.5)
    make_wav("d/b.wav", seconds=0.5)
    with pytest.raises(extract.UsageError, match="holds one embedding"):
        extract.run([tmp_path / "d"], tmp_path / "e.npy", model=tiny_model_dir)


def test_run_report_counts(tiny_model_dir, make_wav, tmp_path):
    a = make_wav("a.wav", seconds=0.5)
    (tmp_path / "bad.wav").write_text("text")
    report = extract.run([a, tmp_path / "bad.wav", tmp_path / "gone.wav", a], tmp_path / "out",
                         model=tiny_model_dir)
    assert (report.total, report.succeeded, report.failed, report.exit_code) == (2, 1, 2, 1)
    assert report.outputs == [tmp_path / "out/a.npy"]
    assert any("gone.wav: no such file" in f for f in report.failures)


def test_colliding_outputs_fail_the_later_input(tiny_model_dir, make_wav, tmp_path):
    make_wav("d/a.wav", seconds=0.5)
    make_wav("d/a.flac", seconds=0.5)
    report = extract.run([tmp_path / "d"], tmp_path / "out", model=tiny_model_dir)
    assert report.succeeded == 1 and report.failed == 1
    assert "d/a.wav: its output" in report.failures[0] and "a.flac" in report.failures[0]


def test_progress_bar_and_quiet(tiny_model_dir, make_wav, tmp_path):
    wav = make_wav("a.wav", seconds=0.5)
    loud = cli("extract", wav, "-o", tmp_path / "1.npy", "--model", tiny_model_dir)
    assert loud.exit_code == 0
    # stderr is not a terminal here: plain lines, the last at the end of the run.
    assert "embedding: 0.5 of 0.5 s of audio (100%), 1 of 1 files" in loud.stderr
    assert "embedded 1 file" in loud.stderr and "\r" not in loud.stderr
    assert loud.stdout == ""
    quiet = cli("extract", wav, "-o", tmp_path / "2.npy", "--model", tiny_model_dir, "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == ""


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_counts_audio_seconds(tiny_model_dir, make_wav, tmp_path):
    # A long file no longer shows 0/1 for the whole run: progress moves as its audio is read.
    long_wav = make_wav("long.wav", seconds=12.0, sr=8000)
    short_wav = make_wav("short.wav", seconds=1.0)
    assert extract.audio_seconds(long_wav) == 12.0
    log = _Stream(tty=False)
    report = extract.run([long_wav, short_wav], tmp_path / "out", model=tiny_model_dir,
                         progress=True, progress_stream=log)
    assert report.succeeded == 2
    assert log.getvalue().splitlines()[-1].startswith(
        "embedding: 13.0 of 13.0 s of audio (100%), 2 of 2 files")

    bar = extract.Progress(13.0, 2, stream=_Stream(tty=False), interval=0.0)
    lines = []
    for seconds in (5.0, 5.0, 2.0, 1.0):
        bar.advance(seconds)
        lines.append(bar.stream.getvalue().splitlines()[-1])
    assert [ln.split(" s of audio")[0] for ln in lines] == [
        "embedding: 5.0 of 13.0", "embedding: 10.0 of 13.0", "embedding: 12.0 of 13.0",
        "embedding: 13.0 of 13.0"]

    tty = _Stream(tty=True)
    bar = extract.Progress(13.0, 2, stream=tty)
    bar.advance(6.5)
    bar.file_done()
    bar.close()
    assert "50%" in tty.getvalue() or "100%" in tty.getvalue()
    assert "\r" in tty.getvalue() and "s of audio" in tty.getvalue()


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "e.npy"
    np.save(target, np.arange(3))

    def crash(f):
        f.write(b"\x93NUMPY partial")
        f.flush()
        assert np.load(target).tolist() == [0, 1, 2]  # readers still see the old file
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        outputs.atomic_write(target, crash)
    assert np.load(target).tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["e.npy"]

    def write_new(f):
        assert not (tmp_path / "new.npy").exists()  # appears only once complete
        np.save(f, np.arange(4))

    outputs.atomic_write(tmp_path / "new.npy", write_new)
    outputs.atomic_write(target, lambda f: np.save(f, np.arange(5)))
    assert np.load(tmp_path / "new.npy").tolist() == [0, 1, 2, 3]
    assert np.load(target).tolist() == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy", "new.npy"]


def test_info(tiny_model_dir):
    res = cli("info", "--model", tiny_model_dir)
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    from audioembed.model_folder import sha256_file
    assert info["sha256"] == sha256_file(Path(tiny_model_dir) / "model.safetensors")
    assert info["config"]["layers"] == [1, 1, 1, 1]
    assert info["frontend"] == json.loads(json.dumps(frontend.config()))


def test_info_registered_model_without_weights(unreleased_model):
    res = cli("info", "--model", unreleased_model)
    assert res.exit_code == 1
    info = json.loads(res.stdout)
    assert info["model"] == unreleased_model and info["weights"] == "missing or unloadable"
    assert info["registry"]["license"] and info["frontend"]["n_mels"] == frontend.N_MELS
    assert "not released" in res.stderr
    assert cli("info", "--model", "no-such-model").exit_code == 2


@pytest.mark.slow  # a subprocess
def test_python_dash_m(tmp_path):
    res = subprocess.run([sys.executable, "-m", "audioembed", "extract", "--help"], capture_output=True,
                         text=True, cwd=Path(__file__).parents[1], timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    assert "Usage: audioembed extract" in res.stdout and "--windows" in res.stdout


def test_extract_with_the_bundled_default_model(tmp_path, fsdd_recordings):
    # The acceptance command: `audioembed extract X.wav -o e.npy`, no --model.
    clip = fsdd_recordings / "3_jackson_0.wav"
    out = tmp_path / "e.npy"
    res = cli("extract", clip, "-o", out, "--quiet")
    assert res.exit_code == 0, res.output
    e = np.load(out)
    assert e.shape == (128,)
    assert_unit(e)


@pytest.mark.slow  # a subprocess
def test_help_and_version_do_not_import_torch():
    code = ("import sys; from audioembed.cli import main\n"
            "try:\n    main(['--help'], prog_name='audioembed')\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parents[1], timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Usage: audioembed" in res.stdout


def test_cli_defaults_match_the_library():
    from audioembed import api, cli

    assert cli.DEFAULT_HOP_SECONDS == frontend.DEFAULT_HOP_SECONDS
    assert cli.DEFAULT_BATCH_SIZE == api.DEFAULT_BATCH_SIZE
    assert cli.BACKENDS == backends.BACKENDS and cli.FORMATS == extract.FORMATS
    assert cli.PRECISIONS == precision.PRECISIONS


def test_cli_docstring_names_every_command():
    from audioembed import cli

    doc = cli.__doc__
    for name, command in cli.main.commands.items():
        assert f"``{name}``" in doc, name
        for sub in getattr(command, "commands", {}):
            assert f"``{sub}``" in doc, f"{name} {sub}"


def test_package_docstrings_point_at_documents_that_exist():
    import re

    import audioembed

    package = Path(audioembed.__file__).parent
    root = package.parent
    for path in sorted(package.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        # The figures live in docs/; README.md is a short front page without them.
        assert "README" not in text, f"{path.name} refers to the README"
        for ref in re.findall(r"\bdocs/[\w-]+\.md\b", text):
            assert (root / ref).is_file(), f"{path.name}: {ref}"


def test_a_batch_writes_every_good_file_and_lists_the_bad_ones(bad_files, make_wav, tiny_model_dir, tmp_path):
    goods = [make_wav("in/good1.wav", seconds=0.7, seed=1), make_wav("in/good2.flac", seconds=1.5, seed=2)]
    bads = [p for p, _ in bad_files.values()]
    inputs = [goods[0], *bads, goods[1]]
    res = cli("extract", *inputs, "-o", tmp_path / "out", "--model", tiny_model_dir, "-q")
    assert res.exit_code == 1
    for g in goods:
        e = np.load(tmp_path / "out" / f"{g.stem}.npy")
        np.testing.assert_allclose(e, embed(g, model=tiny_model_dir), atol=1e-6)
    lines = res.stderr.splitlines()
    assert lines[0] == f"{len(bads)} failed (2 of {len(bads) + 1} inputs embedded):"
    for path, phrase in bad_files.values():
        [line] = [ln for ln in lines if ln.strip().startswith(f"{path}: ")]
        assert phrase in line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good1.npy", "good2.npy"]


def test_an_unexpected_error_fails_that_input_only(make_wav, tiny_model_dir, tmp_path, monkeypatch):
    from audioembed import streaming

    files = [make_wav(f"d/{k}.wav", seconds=0.5, seed=i) for i, k in enumerate("abc")]
    real_update = streaming.SampleChecker.update

    def update(self, block):
        if self.name.endswith("b.wav"):
            raise RuntimeError("simulated bug\nsecond line")
        real_update(self, block)

    monkeypatch.setattr(streaming.SampleChecker, "update", update)
    for workers in (0, 1):
        out = tmp_path / f"out{workers}"
        report = extract.run(files, out, model=tiny_model_dir, workers=workers)
        assert report.failures == [f"{files[1]}: failed with RuntimeError: simulated bug second line"]
        assert sorted(p.name for p in out.iterdir()) == ["a.npy", "c.npy"]

    def interrupt(self, block):
        raise KeyboardInterrupt

    monkeypatch.setattr(streaming.SampleChecker, "update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        extract.run(files, tmp_path / "out_int", model=tiny_model_dir)


def test_folder_scans_count_the_files_they_skip(make_wav, tiny_model_dir, tmp_path):
    make_wav("d/a.wav", seconds=0.5)
    for name in ["x.m4a", "y.m4a", "notes.txt", "README"]:
        (tmp_path / "d" / name).write_bytes(b"x")
    res = cli("extract", tmp_path / "d", "-o", tmp_path / "out", "--model", tiny_model_dir)
    assert res.exit_code == 0
    assert ("note: skipped 4 files without an audio extension in the folders searched (.m4a 2, "
            "(no extension) 1, .txt 1); name a file explicitly to try it anyway") in res.stderr


def test_a_missing_named_input_does_not_say_0_of_0(tiny_model_dir, tmp_path):
    res = cli("extract", tmp_path / "gone.wav", "-o", tmp_path / "e.npy", "--model", tiny_model_dir)
    assert res.exit_code == 1
    assert res.stderr.splitlines()[0] == "1 failed (no audio inputs found):"
    assert "0 of 0" not in res.stderr


def test_non_utf8_file_names_are_embedded(make_wav, tiny_model_dir, tmp_path):
    src = make_wav("d/plain.wav", seconds=0.8)
    raw = os.fsencode(tmp_path / "d") + b"/caf\xe9.wav"
    os.rename(src, raw)
    bad_raw = os.fsencode(tmp_path / "d") + b"/bad\xff.wav"
    with open(bad_raw, "wb") as f:
        f.write(b"not audio at all, just text\n")
    res = cli("extract", tmp_path / "d", "-o", tmp_path / "out", "--model", tiny_model_dir, "-q")
    assert res.exit_code == 1
    out = os.fsencode(tmp_path / "out") + b"/caf\xe9.npy"
    assert os.path.exists(out)
    np.testing.assert_allclose(np.load(out), embed(os.fsdecode(raw), model=tiny_model_dir), atol=1e-6)
    # Printed with the undecodable byte escaped, and for the right reason.
    assert f"{tmp_path / 'd'}/bad\\xff.wav: is a text file, not audio" in res.stderr
    report = extract.run([os.fsdecode(raw)], tmp_path / "all.npz", model=tiny_model_dir)
    assert report.failures == []
    assert os.fsencode(str(np.load(tmp_path / "all.npz")["names"][0])) == raw


@pytest.mark.usefixtures("one_thread")  # many small forward passes
def test_a_newline_in_a_file_name_keeps_its_failure_on_one_line(tmp_path, tiny_model_dir):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "bad\nname.wav").write_bytes(b"not audio at all, just text\n")
    sf.write(folder / "good.wav", np.full(16000, 0.1, np.float32), 16000)
    res = cli("extract", folder, "-o", tmp_path / "out", "--model", tiny_model_dir, "-q", "--workers", "0")
    assert res.exit_code == 1
    lines = [line for line in res.stderr.splitlines() if "bad" in line]
    assert len(lines) == 1 and "bad\\nname.wav" in lines[0], res.stderr
    assert "name.wav" not in res.stderr.replace("bad\\nname.wav", "")
