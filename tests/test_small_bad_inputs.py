"""Smaller promises to a careful or hostile user: damaged Ogg is called corrupt, query ranges
that are malformed or past the end, control characters in names, whole sets of npy files,
exclusive final names, float sample rates, a bundled weights file gone missing."""
from __future__ import annotations

import errno
import os
import re
import warnings

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from audioembed import api, extract, outputs, registry
from audioembed.audio_io import TruncatedAudioWarning, load_waveform
from audioembed.cli import main
from audioembed.errors import AudioembedError
from audioembed.search import SearchError, parse_query

pytestmark = pytest.mark.usefixtures("one_thread")  # many small forward passes


def _ogg(path, seconds=3.0, sr=16000) -> bytes:
    x = (0.1 * np.random.default_rng(0).standard_normal(int(sr * seconds))).astype(np.float32)
    sf.write(path, x, sr)
    return path.read_bytes()


def _warnings_of(path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_waveform(path)
    return [str(w.message) for w in caught if issubclass(w.category, TruncatedAudioWarning)]


def test_damaged_ogg_is_called_corrupt_and_a_cut_one_truncated(tmp_path):
    data = _ogg(tmp_path / "ok.ogg")
    pages = [m.start() for m in re.finditer(b"OggS", data)]
    assert len(pages) >= 4 and _warnings_of(tmp_path / "ok.ogg") == []
    cases = {
        "last_header.ogg": data[:pages[-1]] + b"XXXX" + data[pages[-1] + 4:],
        "middle_zeroed.ogg": data[:pages[2] + 40] + bytes(1500) + data[pages[2] + 1540:],
        "last_body.ogg": data[:pages[-1] + 40] + bytes(200) + data[pages[-1] + 240:],
    }
    for name, damaged in cases.items():
        (tmp_path / name).write_bytes(damaged)
        got = _warnings_of(tmp_path / name)
        assert len(got) == 1 and ": corrupt:" in got[0] and "truncated" not in got[0], (name, got)
        assert "could be decoded" in got[0]
    (tmp_path / "cut.ogg").write_bytes(data[:len(data) // 2])
    got = _warnings_of(tmp_path / "cut.ogg")
    assert len(got) == 1 and "truncated: the Ogg stream ends without its final page" in got[0]
    # Bytes after the stream's last page (a tag, padding) hide no audio.
    (tmp_path / "tagged.ogg").write_bytes(data + b"TAG" + bytes(500))
    assert _warnings_of(tmp_path / "tagged.ogg") == []


def test_damaged_ogg_fails_under_strict_with_its_reason(tmp_path, tiny_model_dir):
    data = _ogg(tmp_path / "ok.ogg")
    pages = [m.start() for m in re.finditer(b"OggS", data)]
    (tmp_path / "bad.ogg").write_bytes(data[:pages[-1]] + b"XXXX" + data[pages[-1] + 4:])
    res = CliRunner().invoke(main, ["extract", str(tmp_path / "bad.ogg"), "-o", str(tmp_path / "e.npy"),
                                    "--model", str(tiny_model_dir), "--strict", "-q", "--workers", "0"])
    assert res.exit_code == 1 and "corrupt: damaged Ogg data at byte" in res.stderr, res.output


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


def _index_and_query(tmp_path, model):
    sr = 16000
    t = np.arange(int(2.5 * sr)) / sr
    sf.write(tmp_path / "q.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    (tmp_path / "db").mkdir()
    sf.write(tmp_path / "db" / "n.wav", (0.1 * np.random.default_rng(0).standard_normal(sr)).astype(np.float32), sr)
    res = CliRunner().invoke(main, ["index", str(tmp_path / "db"), "-o", str(tmp_path / "i.npz"),
                                    "--model", str(model), "-q"])
    assert res.exit_code == 0, res.output
    return tmp_path / "q.wav", tmp_path / "i.npz"


def test_a_range_past_the_end_warns_and_fails_under_strict(tmp_path, tiny_model_dir):
    q, idx = _index_and_query(tmp_path, tiny_model_dir)
    runner = CliRunner()
    base = ["--model", str(tiny_model_dir), "-k", "1"]
    res = runner.invoke(main, ["search", f"{q}@100-200", str(idx), *base])
    assert res.exit_code == 0 and "warning:" in res.stderr and "starts after the audio ends" in res.stderr
    res = runner.invoke(main, ["search", f"{q}@100-200", str(idx), *base, "--strict"])
    assert res.exit_code == 2 and "starts after the audio ends" in res.output and "--strict" in res.output
    res = runner.invoke(main, ["search", f"{q}@1-2", str(idx), *base, "--strict"])
    assert res.exit_code == 0 and "warning" not in res.stderr, res.output
    res = runner.invoke(main, ["search", f"{q}@-3-2", str(idx), *base])
    assert res.exit_code == 2 and "is not a time range" in res.output and "no such query" not in res.output


def test_a_newline_in_a_file_name_keeps_its_failure_on_one_line(tmp_path, tiny_model_dir):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "bad\nname.wav").write_bytes(b"not audio at all, just text\n")
    sf.write(folder / "good.wav", np.full(16000, 0.1, np.float32), 16000)
    res = CliRunner().invoke(main, ["extract", str(folder), "-o", str(tmp_path / "out"),
                                    "--model", str(tiny_model_dir), "-q", "--workers", "0"])
    assert res.exit_code == 1
    lines = [line for line in res.stderr.splitlines() if "bad" in line]
    assert len(lines) == 1 and "bad\\nname.wav" in lines[0], res.stderr
    assert "name.wav" not in res.stderr.replace("bad\\nname.wav", "")


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
    res = CliRunner().invoke(main, ["extract", str(tmp_path / "d"), "-o", str(out), "--windows",
                                    "--model", str(tiny_model_dir), "-q", "--workers", "0"])
    assert res.exit_code == 1 and "No space left on device" in res.stderr, res.output
    assert sorted(p.name for p in out.iterdir()) == []  # no .windows/.timestamps, no temp files
    monkeypatch.undo()
    res = CliRunner().invoke(main, ["extract", str(tmp_path / "d"), "-o", str(out), "--windows",
                                    "--model", str(tiny_model_dir), "-q", "--workers", "0"])
    assert res.exit_code == 0, res.output  # nothing left in the way of the rerun
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "a.timestamps.npy", "a.windows.npy"]


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


def test_embed_takes_an_integral_float_sample_rate(tiny_model_dir):
    x = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    want = api.embed(x, sr=16000, model=tiny_model_dir)
    for sr in (16000.0, np.float64(16000), np.float32(16000)):
        np.testing.assert_array_equal(api.embed(x, sr=sr, model=tiny_model_dir), want)
    for bad in (16000.5, float("nan"), True):
        with pytest.raises(AudioembedError, match="invalid sample rate"):
            api.embed(x, sr=bad, model=tiny_model_dir)


def test_a_missing_bundled_weights_file_says_reinstall(monkeypatch, tmp_path):
    from audioembed.loading import load_model

    entry = registry.PretrainedModel(name="gone-test-model", bundled="no-such-folder",
                                     sha256="0" * 64, license="test", paper=registry.PAPER,
                                     description="registered and released, files deleted")
    monkeypatch.setitem(registry._REGISTRY, entry.name, entry)
    with pytest.raises(AudioembedError) as info:
        load_model(entry.name)
    msg = str(info.value)
    assert "not released" not in msg and "missing" in msg and "reinstall" in msg
    res = CliRunner().invoke(main, ["info", "--model", entry.name])
    assert res.exit_code == 1 and "reinstall" in res.stderr


def test_a_cut_flac_keeps_the_audio_before_the_cut_as_wav_and_ogg_do(tmp_path, tiny_model_dir):
    x = (0.1 * np.random.default_rng(1).standard_normal(16000 * 4)).astype(np.float32)
    sf.write(tmp_path / "whole.flac", x, 16000)
    data = (tmp_path / "whole.flac").read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[:len(data) // 2])
    [message] = _warnings_of(cut)
    assert message.startswith(f"{cut}: truncated or corrupt FLAC: decoding stopped after ")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedAudioWarning)
        part = load_waveform(cut).numpy()
    assert 0.5 * 16000 < len(part) < 2 * 16000
    np.testing.assert_allclose(part, x[:len(part)], atol=1e-4)  # the audio before the cut
    report = extract.run([cut], tmp_path / "out.npy", model=tiny_model_dir)
    assert not report.failures and (tmp_path / "out.npy").is_file()
    strict = extract.run([cut], tmp_path / "strict.npy", model=tiny_model_dir, strict=True)
    [reason] = strict.failures
    assert "truncated or corrupt FLAC" in reason
    assert _warnings_of(tmp_path / "whole.flac") == []
