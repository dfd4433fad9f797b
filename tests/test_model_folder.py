"""The release format (config.json + fp16 model.safetensors), loading and the registry."""
from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from audioembed import frontend, list_models, load_model, loading, registry
from audioembed.loading import ModelNotAvailableError
from audioembed.model import AudioResNet
from audioembed.model_folder import (CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME, ModelFormatError,
                                     load_model_folder, read_config, save_model_folder, sha256_file)
from helpers_hub import TINY_CONFIG, fp16_rounded, tiny_model

PROVENANCE = {"trained_on": "test", "commit": "abc"}


@pytest.fixture
def folder(tmp_path):
    return save_model_folder(tiny_model(0), tmp_path / "model", provenance=PROVENANCE)


def windows(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 96, 64, generator=torch.Generator().manual_seed(seed)) - 4.0


def edit_config(folder, **changes) -> None:
    path = folder / CONFIG_NAME
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            cfg[section][sub] = value
        else:
            cfg[section] = value
    path.write_text(json.dumps(cfg))


def test_folder_holds_config_and_fp16_safetensors_only(folder):
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    assert cfg["format_version"] == FORMAT_VERSION == 1
    assert cfg["library"] == "audioembed"
    assert cfg["embedding_dim"] == 128
    assert cfg["model"] == TINY_CONFIG.to_dict()
    assert cfg["frontend"] == json.loads(json.dumps(frontend.config()))
    assert cfg["provenance"] == PROVENANCE
    # safetensors: 8-byte little-endian header length, then a JSON header; no pickle anywhere.
    raw = (folder / WEIGHTS_NAME).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    assert dtypes == {"F16", "I64"}  # weights fp16; BN's num_batches_tracked stays an integer
    assert not raw.startswith(b"\x80"), "a pickle stream starts with the PROTO opcode 0x80"


def test_round_trip_loads_fp32_and_matches_within_fp16(folder, monkeypatch):
    def no_pickle(*a, **k):
        raise AssertionError("loading a release must not unpickle anything")

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    loaded = load_model_folder(folder)
    assert not loaded.training
    assert all(v.dtype == torch.float32 for v in loaded.state_dict().values() if v.is_floating_point())
    assert loaded.conv1.weight.is_contiguous(memory_format=torch.channels_last)

    original = tiny_model(0)
    # Exactly the original weights rounded to fp16, then widened.
    rounded = fp16_rounded(tiny_model(0)).state_dict()
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, rounded[k], rtol=0, atol=0, msg=k)
    x = windows()
    with torch.inference_mode():
        a, b = original(x), loaded(x)
    torch.testing.assert_close(b, a, rtol=0, atol=5e-3)  # fp16 weights; outputs are unit vectors
    assert loaded.info["sha256"] == sha256_file(folder / WEIGHTS_NAME)
    assert loaded.info["config"]["provenance"] == PROVENANCE


def test_load_model_accepts_a_folder_path(folder):
    model = load_model(str(folder))
    assert model.info["source"] == str(folder.resolve())
    assert load_model(folder).info["sha256"] == model.info["sha256"]


def test_save_is_deterministic_and_overwrites(folder, tmp_path):
    again = save_model_folder(tiny_model(0), tmp_path / "again", provenance=PROVENANCE)
    assert (again / WEIGHTS_NAME).read_bytes() == (folder / WEIGHTS_NAME).read_bytes()
    save_model_folder(tiny_model(1), folder, provenance=PROVENANCE)
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]  # no temp files left
    assert (again / WEIGHTS_NAME).read_bytes() != (folder / WEIGHTS_NAME).read_bytes()


def test_fp16_overflow_is_refused(tmp_path):
    model = tiny_model(0)
    with torch.no_grad():
        model.bn1.running_var[0] = 1e6
    with pytest.raises(ValueError, match="bn1.running_var"):
        save_model_folder(model, tmp_path / "m")
    assert not (tmp_path / "m" / WEIGHTS_NAME).exists()


@pytest.mark.parametrize("version", [2, 0, None, "1"])
def test_unknown_format_version_is_refused(folder, version):
    edit_config(folder, format_version=version)
    with pytest.raises(ModelFormatError, match=r"format_version .* not supported.*upgrade"):
        load_model_folder(folder)


@pytest.mark.parametrize("key, value", [("n_mels", 128), ("log_offset", 0.01), ("f_max", 8000.0),
                                        ("spectrum", "magnitude"), ("window_frames", 100)])
def test_frontend_config_differing_from_the_code_is_refused(folder, key, value):
    edit_config(folder, **{f"frontend__{key}": value})
    with pytest.raises(ModelFormatError, match="different frontend") as err:
        load_model_folder(folder)
    assert f"{key}: model has {value!r}" in str(err.value)


def test_missing_frontend_config_is_refused(folder):
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    del cfg["frontend"]
    (folder / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="no frontend config"):
        read_config(folder)


def test_sha256_mismatch_is_refused(folder):
    with pytest.raises(ModelFormatError, match="sha256"):
        load_model_folder(folder, expected_sha256="0" * 64)
    assert load_model_folder(folder, expected_sha256=sha256_file(folder / WEIGHTS_NAME)) is not None


def test_registry_entry_with_a_wrong_sha256_is_refused(folder, monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "local-test", registry.PretrainedModel(
        name="local-test", bundled="local-test", sha256="f" * 64, license="CC0-1.0",
        paper=registry.PAPER, description="test entry"))
    monkeypatch.setattr(loading, "_bundled_folder", lambda entry: folder)
    with pytest.raises(ModelFormatError, match="does not match the registry"):
        load_model("local-test")


@pytest.mark.parametrize("breakage, match", [
    ("no-config", "no config.json"),
    ("bad-json", "invalid JSON"),
    ("not-object", "JSON object"),
    ("no-weights", "no model.safetensors"),
    ("garbage-weights", "not a readable safetensors"),
    ("other-arch", "do not match the config"),
    ("embedding-dim", "embedding_dim"),
    ("model-config", "bad model config"),
])
def test_broken_folders_fail_with_model_format_error(folder, tmp_path, breakage, match):
    if breakage == "no-config":
        (folder / CONFIG_NAME).unlink()
    elif breakage == "bad-json":
        (folder / CONFIG_NAME).write_text("{")
    elif breakage == "not-object":
        (folder / CONFIG_NAME).write_text("[1]")
    elif breakage == "no-weights":
        (folder / WEIGHTS_NAME).unlink()
    elif breakage == "garbage-weights":
        (folder / WEIGHTS_NAME).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    elif breakage == "other-arch":
        other = save_model_folder(AudioResNet(TINY_CONFIG.__class__(layers=(1, 1, 1, 1), base_width=16)),
                                  tmp_path / "other")
        (folder / WEIGHTS_NAME).write_bytes((other / WEIGHTS_NAME).read_bytes())
    elif breakage == "embedding-dim":
        edit_config(folder, embedding_dim=64)
    elif breakage == "model-config":
        edit_config(folder, model__layers=[1, 1])
    with pytest.raises(ModelFormatError, match=match):
        load_model_folder(folder)


def test_unreleased_model_is_not_available_and_says_how_to_get_weights(unreleased_model):
    with pytest.raises(ModelNotAvailableError) as err:
        load_model(unreleased_model)
    msg = str(err.value)
    assert unreleased_model in msg and "not released" in msg
    assert "model folder" in msg and "hf-hub:org/repo" in msg and "export" in msg


def test_default_model_is_bundled_and_checked_against_its_sha256():
    entry = registry.get(registry.DEFAULT_MODEL)
    assert registry.DEFAULT_MODEL in list_models() and entry.sha256
    model = load_model()
    assert model.info["sha256"] == entry.sha256 and model.info["source"] == f"registry:{entry.name}"
    assert model.config.layers == (3, 4, 6, 3) and model.config.embedding_dim == 128
    assert all(p.dtype == torch.float32 for p in model.parameters())
    prov = model.info["config"]["provenance"]
    assert prov["triplets_seen"] > 0 and prov["data_manifest_sha256"]


def test_list_models():
    names = list_models()
    assert names == sorted(names) and registry.DEFAULT_MODEL in names
    assert "triplet-resnet50-joint-v0.2" in names  # pinned: stays loadable after later releases
    for name in names:
        entry = registry.get(name)
        assert entry.paper.startswith("A. Jansen") and entry.license and entry.sha256
    assert registry.get("no-such-model") is None


def test_unknown_name_is_refused_clearly(tmp_path):
    with pytest.raises(ModelFormatError, match="neither a registered model"):
        load_model(str(tmp_path / "nowhere"))


def test_embedding_dim_follows_the_config(tmp_path):
    cfg = TINY_CONFIG.__class__(layers=(1, 1, 1, 1), base_width=8, embedding_dim=32)
    folder = save_model_folder(AudioResNet(cfg).eval(), tmp_path / "m32")
    assert json.loads((folder / CONFIG_NAME).read_text())["embedding_dim"] == 32
    with torch.inference_mode():
        out = load_model_folder(folder)(windows(2))
    assert out.shape == (2, 32)
    np.testing.assert_allclose(out.norm(dim=1).numpy(), 1.0, rtol=1e-6)


def test_release_provenance_holds_repo_relative_paths_and_a_clean_commit(tmp_path):
    import json

    from audioembed.model_folder import release_provenance

    raw = {"data_manifest": "/work/main/training/recipes/debian/unlabeled.csv",
           "git_commit": "6b54450c363186a5395f44fd4e141c38d23de9fd+dirty",
           "training_config": {"data": {"cache": "/root/.cache/audioembed/features/x"},
                               "roots": ["/home/ann/src/audioembed/audioembed/pretrained/m", "/data/c/x.csv"]},
           "steps": 5, "note": "kept as it is"}
    assert release_provenance(raw) == {
        "data_manifest": "training/recipes/debian/unlabeled.csv",
        "git_commit": "6b54450c363186a5395f44fd4e141c38d23de9fd", "git_tree_dirty": True,
        "training_config": {"data": {"cache": "~/.cache/audioembed/features/x"},
                            "roots": ["audioembed/pretrained/m", ".../c/x.csv"]},
        "steps": 5, "note": "kept as it is"}
    saved = save_model_folder(tiny_model(0), tmp_path / "m", provenance=raw)
    assert json.loads((saved / "config.json").read_text())["provenance"] == release_provenance(raw)

    bundled = Path(__file__).parents[1] / "audioembed" / "pretrained" / "triplet-resnet50-joint"
    text = json.dumps(json.loads((bundled / "config.json").read_text())["provenance"])
    assert '"/' not in text and "+dirty" not in text


def test_pinned_release_names_load_their_own_weights_or_say_where_they_are():
    # The sha256s are the releases' (MODEL_CARD.md, git history): a pinned name keeps loading
    # exactly those weights whatever the default becomes, or, once its weights leave the wheel,
    # fails naming the last package version that bundles them; never other weights.
    model = load_model("triplet-resnet50-joint-v0.4")
    assert model.info["sha256"].startswith("de6671b93490")
    assert model.info["source"] == "registry:triplet-resnet50-joint-v0.4"
    assert load_model("triplet-resnet50-joint-v0.5").info["sha256"] == load_model().info["sha256"]
    with pytest.raises(ModelNotAvailableError, match=r"audioembed==0\.4\.0.*0dd82f15630b9663"):
        load_model("triplet-resnet50-joint-v0.3")
    with pytest.raises(ModelNotAvailableError, match=r"audioembed==0\.3\.0.*0415adb4b3dc3dfd"):
        load_model("triplet-resnet50-joint-v0.2")
