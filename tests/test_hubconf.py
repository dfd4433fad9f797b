"""``hubconf.py``: torch.hub.load from a local checkout."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from audioembed import AudioResNet, ModelNotAvailableError, load_model

REPO = str(Path(__file__).resolve().parents[1])


def test_entry_points_and_dependencies():
    # torch.hub.list and help read GitHub only; this is the rule they apply to the module.
    spec = importlib.util.spec_from_file_location("hubconf_under_test", Path(REPO) / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = [f for f in dir(hubconf) if callable(getattr(hubconf, f)) and not f.startswith("_")]
    assert entries == ["load_model", "triplet_resnet50_joint"]
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
