"""Bad outputs, indexes, model names, configs and devices: one-line errors (exit 2), no traceback."""
from __future__ import annotations

import errno
import json
import os
import shutil

import numpy as np
import pytest

from audioembed import shards
from audioembed.loading import load_model
from audioembed.model_folder import ModelFormatError, load_model_folder
from helpers_cli import cli


def assert_usage_error(res, phrase: str) -> None:
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert phrase in res.stderr and "Traceback" not in res.output, res.stderr


@pytest.fixture
def two_shards(make_wav, tmp_path, tiny_model_dir):
    for i in range(2):
        make_wav(f"in/c{i}.wav", seconds=1.0, seed=i)
    for k in range(2):
        assert cli("extract", tmp_path / "in", "--shard", f"{k}/2", "-o", tmp_path / "a.npz",
                   "--model", tiny_model_dir, "-q").exit_code == 0
    return sorted(tmp_path.glob("a.shard-*.npz"))


def test_merge_outputs_that_cannot_be_written(two_shards, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    assert_usage_error(cli("merge", *two_shards, "-o", tmp_path / "file" / "m.npz"), "is a file")
    (tmp_path / "dir").mkdir()
    assert_usage_error(cli("merge", *two_shards, "-o", tmp_path / "dir", "--overwrite"), "is a folder")

    def full(path, arrays):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(shards, "save_archive", full)
    assert_usage_error(cli("merge", *two_shards, "-o", tmp_path / "m.npz"), "No space left on device")
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_merge_into_a_read_only_folder(two_shards, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    assert_usage_error(cli("merge", *two_shards, "-o", ro / "m.npz"), "cannot write")


def test_search_on_indexes_that_are_not_readable_archives(make_wav, tmp_path):
    query = make_wav("q.wav")
    np.savez(tmp_path / "good.npz", names=np.array(["a", "b"]),
             embeddings=np.full((2, 128), 0.25, np.float32))
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[:len(data) // 2])
    at = data.index(np.float32(0.25).tobytes() * 4)
    (tmp_path / "crc.npz").write_bytes(data[:at] + b"\x01" + data[at + 1:])
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "raw.npy", np.zeros((2, 128), np.float32))
    for name, phrase in [("truncated.npz", "cannot be read"), ("crc.npz", "corrupt"),
                         ("empty.npz", "cannot be read"), ("raw.npy", "single array")]:
        assert_usage_error(cli("search", query, tmp_path / name), phrase)


@pytest.mark.parametrize("name", ["hf-hub:a/..", "hf-hub:../..@main", "hf-hub:a b/c", "hf-hub:a--b/c"])
def test_malformed_hub_names_are_one_line_errors(name, make_wav, tmp_path):
    with pytest.raises(ModelFormatError, match="bad Hub model name"):
        load_model(name)
    assert_usage_error(cli("info", "--model", name), "bad Hub model name")
    assert_usage_error(cli("extract", make_wav("a.wav"), "-o", tmp_path / "a.npy", "--model", name),
                       "bad Hub model name")


def test_export_onnx_to_an_unwritable_path_fails_before_exporting(tmp_path, monkeypatch):
    from audioembed import extract

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(extract, "load_model_for_cli", no_load)
    (tmp_path / "file").write_text("x")
    assert_usage_error(cli("export-onnx", tmp_path / "file" / "m.onnx"), "is a file")
    (tmp_path / "dir.onnx").mkdir()
    assert_usage_error(cli("export-onnx", tmp_path / "dir.onnx", "--overwrite"), "is a folder")


@pytest.mark.parametrize("change", [{"base_width": 4096}, {"layers": [1, 1, 1, 10 ** 6]},
                                    {"base_width": 16}])
def test_a_config_whose_sizes_are_wrong_is_refused_before_building_it(change, tiny_model_dir,
                                                                       tmp_path, monkeypatch):
    from audioembed import model_folder

    built = []

    class Recorded(model_folder.AudioResNet):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(next(self.parameters()).device.type)

    monkeypatch.setattr(model_folder, "AudioResNet", Recorded)
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model"].update(change)
    (folder / "config.json").write_text(json.dumps(config))
    # base_width 16 is within bounds but disagrees with the weights: the file's header says so
    # before a network of that width is allocated.
    with pytest.raises(ModelFormatError, match="base_width|layers|do not match"):
        load_model_folder(folder)
    assert "cpu" not in built  # no memory was allocated for the network the config describes
    assert cli("info", "--model", folder).exit_code == 1


def test_device_meta_is_a_usage_error(make_wav, tmp_path, tiny_model_dir):
    assert_usage_error(cli("extract", make_wav("a.wav"), "-o", tmp_path / "a.npy", "--device", "meta",
                           "--model", tiny_model_dir), "--device meta")
