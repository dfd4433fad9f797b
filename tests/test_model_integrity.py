"""Model folders whose weights are corrupt are refused at load, naming what is wrong; a bundled
release whose files are gone says to reinstall."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from audioembed import registry, save_model_folder
from audioembed.errors import AudioembedError
from audioembed.model_folder import WEIGHTS_SHA256_KEY, ModelFormatError, load_model_folder, sha256_file
from helpers_cli import cli


@pytest.fixture
def nan_model_dir(tiny_model_dir, tmp_path):
    net = load_model_folder(tiny_model_dir)
    with torch.no_grad():
        net.layer2[0].conv2.weight[0, 0, 0, 0] = float("nan")
    return save_model_folder(net, tmp_path / "nan_model")


def test_a_nan_weight_is_refused_at_load_naming_its_tensor(nan_model_dir, make_wav, tmp_path):
    with pytest.raises(ModelFormatError, match=r"layer2\.0\.conv2\.weight.*NaN"):
        load_model_folder(nan_model_dir)
    res = cli("info", "--model", nan_model_dir)
    assert res.exit_code == 1 and "layer2.0.conv2.weight" in res.stderr
    res = cli("extract", make_wav("a.wav"), "-o", tmp_path / "a.npy", "--model", nan_model_dir)
    assert res.exit_code == 2 and "layer2.0.conv2.weight" in res.stderr
    assert "scale it down" not in res.stderr and not (tmp_path / "a.npy").exists()


def _overwrite_weights_with_finite_garbage(folder) -> None:
    """Keep the safetensors header, replace every weight byte with finite fp16 noise."""
    path = folder / "model.safetensors"
    data = path.read_bytes()
    start = 8 + int.from_bytes(data[:8], "little")
    noise = np.random.default_rng(0).standard_normal((len(data) - start) // 2).astype(np.float16)
    path.write_bytes(data[:start] + noise.tobytes() + data[start + noise.nbytes:])


def test_saved_folders_record_their_weights_sha256_and_load_checks_it(tiny_model_dir, tmp_path):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config[WEIGHTS_SHA256_KEY] == sha256_file(tiny_model_dir / "model.safetensors")
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    _overwrite_weights_with_finite_garbage(folder)
    with pytest.raises(ModelFormatError, match="does not match"):
        load_model_folder(folder)
    assert cli("info", "--model", folder).exit_code == 1
    # A folder saved before the sha256 was recorded still loads (here: the garbage, unchecked).
    del config[WEIGHTS_SHA256_KEY]
    (folder / "config.json").write_text(json.dumps(config))
    assert load_model_folder(folder).info["sha256"] == sha256_file(folder / "model.safetensors")


def test_the_bundled_releases_still_load(tmp_path):
    from audioembed import registry
    from audioembed.loading import load_model

    bundled = [entry for entry in registry.released() if entry.bundled is not None]
    assert len(bundled) >= 2
    for entry in bundled:
        assert load_model(entry.name).info["sha256"] == entry.sha256


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
    res = cli("info", "--model", entry.name)
    assert res.exit_code == 1 and "reinstall" in res.stderr
