"""The network (paper section 4.2): ResNet-50 on 1 x 96 x 64 log-mel windows, 128-d unit output.

The full ResNet-50 is built once per module and run forward once; everything else uses a tiny
``layers=(1, 1, 1, 1), base_width=8`` model.
"""
from __future__ import annotations

import pytest
import torch

from audioembed.model import AudioResNet, Bottleneck, ModelConfig
from helpers_hub import tiny_model

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_resnet50_shapes(in_channels: int = 3, num_classes: int = 1000) -> dict[str, tuple]:
    """torchvision.models.resnet50's state-dict names and shapes, written out from its layout
    (stem conv1/bn1; layer1..4 of [3, 4, 6, 3] Bottlenecks with conv1/bn1..conv3/bn3 and a
    downsample.0 conv / downsample.1 BN on each stage's first block; fc)."""
    shapes: dict[str, tuple] = {"conv1.weight": (64, in_channels, 7, 7)}

    def bn(prefix: str, n: int) -> None:
        for p in BN:
            shapes[f"{prefix}.{p}"] = () if p == "num_batches_tracked" else (n,)

    bn("bn1", 64)
    inplanes = 64
    for stage, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            pre = f"layer{stage}.{b}"
            shapes[f"{pre}.conv1.weight"] = (planes, inplanes, 1, 1)
            bn(f"{pre}.bn1", planes)
            shapes[f"{pre}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{pre}.bn2", planes)
            shapes[f"{pre}.conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(f"{pre}.bn3", planes * 4)
            if b == 0:
                shapes[f"{pre}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                bn(f"{pre}.downsample.1", planes * 4)
            inplanes = planes * 4
    shapes["fc.weight"] = (num_classes, 2048)
    shapes["fc.bias"] = (num_classes,)
    return shapes


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return AudioResNet().eval()


def test_state_dict_follows_torchvision_naming(resnet50):
    ours = {k: tuple(v.shape) for k, v in resnet50.state_dict().items()}
    tv = torchvision_resnet50_shapes()
    assert set(ours) == set(tv)
    assert len(ours) == 320  # torchvision resnet50's state dict has 320 entries
    # Only the one-channel input and the 128-d head differ from ImageNet's ResNet-50.
    differ = {k for k in tv if ours[k] != tv[k]}
    assert differ == {"conv1.weight", "fc.weight", "fc.bias"}
    assert torchvision_resnet50_shapes(in_channels=1, num_classes=128) == ours


def test_parameter_count(resnet50):
    # torchvision resnet50: 25,557,032; minus 2 input channels of conv1 (2 * 64 * 49), with a
    # 2048 -> 128 head instead of 2048 -> 1000.
    expected = 25_557_032 - 2 * 64 * 49 - (2048 * 1000 + 1000) + (2048 * 128 + 128)
    assert sum(p.numel() for p in resnet50.parameters()) == expected


def test_resnet50_layout_and_shapes(resnet50):
    m = resnet50
    assert (m.conv1.kernel_size, m.conv1.stride, m.conv1.padding) == ((7, 7), (2, 2), (3, 3))
    assert (m.conv1.in_channels, m.conv1.out_channels) == (1, 64)
    assert (m.maxpool.kernel_size, m.maxpool.stride) == (3, 2)
    assert [len(getattr(m, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert all(isinstance(b, Bottleneck) for i in range(1, 5) for b in getattr(m, f"layer{i}"))
    # torchvision's "v1.5": the stride sits on the 3x3 conv of each stage's first block.
    for i, stride in zip(range(1, 5), (1, 2, 2, 2)):
        first = getattr(m, f"layer{i}")[0]
        assert first.conv2.stride == (stride, stride) and first.conv1.stride == (1, 1)
    assert (m.fc.in_features, m.fc.out_features) == (2048, 128)

    seen = {}
    hooks = [getattr(m, n).register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, tuple(o.shape)))
             for n in ("maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool")]
    try:
        with torch.inference_mode():
            out = m(torch.randn(2, 96, 64).contiguous())
    finally:
        for h in hooks:
            h.remove()
    assert seen == {"maxpool": (2, 64, 24, 16), "layer1": (2, 256, 24, 16), "layer2": (2, 512, 12, 8),
                    "layer3": (2, 1024, 6, 4), "layer4": (2, 2048, 3, 2), "avgpool": (2, 2048, 1, 1)}
    assert out.shape == (2, 128) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


def test_input_layouts_agree():
    m = tiny_model()
    x = torch.randn(5, 96, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a = m(x)
        b = m(x.unsqueeze(1))
        c = m(x.unsqueeze(1).contiguous(memory_format=torch.channels_last))
        m_cl = tiny_model().to(memory_format=torch.channels_last)
        d = m_cl(x.unsqueeze(1).contiguous(memory_format=torch.channels_last))
    assert a.shape == (5, 128)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a, d, rtol=1e-5, atol=1e-6)


def test_single_window_keeps_its_batch_dimension():
    m = tiny_model()
    with torch.inference_mode():
        for x in (torch.randn(1, 96, 64), torch.randn(1, 1, 96, 64)):
            out = m(x)
            assert out.shape == (1, 128)
            torch.testing.assert_close(out.norm(dim=1), torch.ones(1))


def test_output_is_unit_norm_and_batch_independent():
    m = tiny_model()
    x = torch.randn(9, 96, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full = m(x)
        parts = torch.cat([m(x[:1]), m(x[1:4]), m(x[4:])])
    torch.testing.assert_close(full.norm(dim=1), torch.ones(9))
    torch.testing.assert_close(full, parts, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(full[0], full[1], atol=1e-3), "distinct inputs, distinct embeddings"


@pytest.mark.parametrize("shape", [(96, 64), (2, 2, 96, 64), (2, 1, 1, 96, 64)])
def test_bad_input_shapes_are_refused(shape):
    with pytest.raises(ValueError, match="expected"):
        tiny_model()(torch.zeros(shape))


def test_model_config_round_trip_and_validation():
    cfg = ModelConfig(layers=(1, 1, 1, 1), base_width=8)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_dict({}) == ModelConfig()
    assert ModelConfig().layers == (3, 4, 6, 3) and ModelConfig().embedding_dim == 128
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({"depth": 50})
    with pytest.raises(ValueError, match="arch"):
        ModelConfig.from_dict({"arch": "vit"})
    with pytest.raises(ValueError, match="layers"):
        ModelConfig.from_dict({"layers": [3, 4, 6]})
