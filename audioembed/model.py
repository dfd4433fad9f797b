"""The paper's network (section 4.2): a ResNet-50 on one-channel log-mel windows, 128-d output.

Parameter names follow torchvision's ``ResNet`` (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0``, ..., ``fc``), so state dicts interoperate with tools written for it.
The frontend is not part of ``forward()``: the input is log-mel windows
``(batch, WINDOW_FRAMES, N_MELS)`` or ``(batch, 1, WINDOW_FRAMES, N_MELS)``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from audioembed.errors import InvalidArgumentError


# Bounds on a config's sizes, far above any trained network (ResNet-50: base_width 64, at most
# 6 blocks a stage), so that a corrupt or hostile config.json is refused before a network of
# its size is built.
_MAX_BLOCKS = 64
_MAX_SIZES = {"base_width": 1024, "in_channels": 64, "embedding_dim": 16384}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an embedding network; stored under ``"model"`` in ``config.json``."""

    arch: str = "resnet"
    layers: tuple[int, ...] = (3, 4, 6, 3)  # ResNet-50
    base_width: int = 64
    in_channels: int = 1
    embedding_dim: int = 128

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        d = dict(d)
        if "layers" in d:
            d["layers"] = tuple(int(x) for x in d["layers"])
        cfg = cls(**d)
        if cfg.arch != "resnet":
            raise ValueError(f"unsupported arch {cfg.arch!r}; this version knows 'resnet'")
        if len(cfg.layers) != 4 or min(cfg.layers) < 1 or max(cfg.layers) > _MAX_BLOCKS:
            raise ValueError(f"layers must be four block counts in 1..{_MAX_BLOCKS}, got {cfg.layers}")
        for key, most in _MAX_SIZES.items():
            value = getattr(cfg, key)
            if not (type(value) is int and 1 <= value <= most):
                raise ValueError(f"{key} must be an integer in 1..{most}, got {value!r}")
        return cfg

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (stride on the 3x3 conv, "ResNet v1.5")."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class AudioResNet(nn.Module):
    """ResNet (default: 50 layers) with a 128-unit linear head and L2-normalised output."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        c = self.config
        w = c.base_width
        self.conv1 = nn.Conv2d(c.in_channels, w, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.inplanes = w
        self.layer1 = self._make_layer(w, c.layers[0], 1)
        self.layer2 = self._make_layer(w * 2, c.layers[1], 2)
        self.layer3 = self._make_layer(w * 4, c.layers[2], 2)
        self.layer4 = self._make_layer(w * 8, c.layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w * 8 * Bottleneck.expansion, c.embedding_dim)
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        out = planes * Bottleneck.expansion
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = out
        layers += [Bottleneck(out, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each block so every residual branch starts as identity;
        # it makes the deep net train stably at the paper's small learning rates.
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    @property
    def embedding_dim(self) -> int:
        """Output size; ``onnx_backend.OnnxModel`` has the same attribute."""
        return self.config.embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-mel windows ``(B, T, F)`` or ``(B, 1, T, F)`` -> unit-norm embeddings ``(B, D)``."""
        return F.normalize(self.fc(self.pooled(x)), dim=1)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The globally average-pooled features ``(B, 8 * 4 * base_width)`` (2048 for ResNet-50)
        that the embedding layer ``fc`` maps to ``(B, D)``."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise InvalidArgumentError(f"expected (batch, frames, bands) or (batch, 1, frames, bands), "
                             f"got {tuple(x.shape)}")
        if torch.is_autocast_enabled(x.device.type):
            # The stem sees raw log-mel values, which bf16's 8-bit mantissa rounds by up to ~0.03:
            # in bf16 that moved some embeddings to cosine 0.993 of fp32; in fp32 (about 0.5% of
            # the network's multiply-adds) they stay above 0.9999.
            with torch.autocast(x.device.type, enabled=False):
                x = self._stem(x.float())
        else:
            x = self._stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)
