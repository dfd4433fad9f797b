"""``hubconf.py``: torch.hub.load from a local checkout."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from audioembed import AudioResNet, ModelNotAvailableError, load_model

REPO = str(Path(__file__).resolve().parents[1])


def _hubconf():
    spec = importlib.util.spec_from_file_location("hubconf_under_test", Path(REPO) / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    return hubconf


def _entries(hubconf) -> list[str]:
    # torch.hub.list and help read GitHub only; this is the rule they apply to the module.
    return [f for f in dir(hubconf) if callable(getattr(hubconf, f)) and not f.startswith("_")]


def test_entry_points_and_dependencies():
    hubconf = _hubconf()
    entries = _entries(hubconf)
    assert entries == ["load_model", "triplet_resnet50_joint", "triplet_resnet50_joint_v0_2",
                       "triplet_resnet50_joint_v0_3", "triplet_resnet50_joint_v0_4", "triplet_resnet50_joint_v0_5"]
    assert "ModelNotAvailableError" in hubconf.triplet_resnet50_joint.__doc__
    assert hubconf.dependencies == ["torch", "torchaudio", "numpy", "soundfile", "safetensors"]


def test_load_a_model_folder(tiny_model_dir):
    net = torch.hub.load(REPO, "load_model", str(tiny_model_dir), source="local")
    want = load_model(tiny_model_dir)
    assert isinstance(net, AudioResNet) and not net.training
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), want.state_dict().values()))
    x = torch.randn(2, 96, 64)
    with torch.inference_mode():
        torch.testing.assert_close(net(x), want(x), rtol=0, atol=0)


def test_default_model_is_the_bundled_release():
    from audioembed import registry

    net = torch.hub.load(REPO, "triplet_resnet50_joint", source="local")
    assert isinstance(net, AudioResNet) and not net.training
    assert net.info["sha256"] == registry.get(registry.DEFAULT_MODEL).sha256


def test_untrained_network():
    net = torch.hub.load(REPO, "triplet_resnet50_joint", pretrained=False, source="local")
    assert isinstance(net, AudioResNet) and not net.training
    assert net.config.layers == (3, 4, 6, 3) and net.config.embedding_dim == 128
    with pytest.raises(TypeError, match="device"):
        torch.hub.load(REPO, "triplet_resnet50_joint", pretrained=False, cache_dir="x", source="local")


def test_the_docs_say_the_weights_are_released():
    text = (Path(REPO) / "hubconf.py").read_text()
    assert "not released" not in text and 'source="local"' in text


def test_every_released_registry_entry_is_an_entry_point():
    from audioembed import registry

    released = [m.identifier for m in registry.released()]
    assert released and set(released) <= set(_entries(_hubconf()))
    assert registry.get(registry.DEFAULT_MODEL).identifier in released
    assert "triplet_resnet50_joint_v0_2" in released  # a pinned release name is an identifier too


def test_entry_points_follow_the_registry(monkeypatch):
    from audioembed import registry

    monkeypatch.setitem(registry._REGISTRY, "extra-model", registry.PretrainedModel(
        name="extra-model", hub_id="org/extra", sha256="0" * 64, license="CC0-1.0",
        paper=registry.PAPER, description="test entry"))
    monkeypatch.setitem(registry._REGISTRY, "unreleased-model", registry.PretrainedModel(
        name="unreleased-model", bundled="unreleased-model", license="CC0-1.0",
        paper=registry.PAPER, description="test entry"))
    hubconf = _hubconf()
    assert "extra_model" in _entries(hubconf) and "unreleased_model" not in _entries(hubconf)
    assert "hf-hub:org/extra" in hubconf.extra_model.__doc__
