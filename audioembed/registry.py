"""Pretrained models that ``load_model`` knows by name (cf. timm's pretrained configs)."""
from __future__ import annotations

from dataclasses import dataclass

PAPER = ("A. Jansen et al., 'Unsupervised Learning of Semantic Audio Representations', "
         "ICASSP 2018, arXiv:1711.02209")


@dataclass(frozen=True)
class PretrainedModel:
    name: str
    source: str  # "bundled:<folder under audioembed/pretrained>" or "hf-hub:org/repo@revision"
    sha256: str | None  # of model.safetensors; None while the weights are not released
    license: str
    paper: str
    description: str


DEFAULT_MODEL = "triplet-resnet50-joint"

_REGISTRY = {
    m.name: m for m in [
        PretrainedModel(
            name="triplet-resnet50-joint",
            source="bundled:triplet-resnet50-joint",
            sha256="0415adb4b3dc3dfdfd1d2d3c4f9605c3af0301cb026433406673f357b57e38ff",
            license="CC-BY-SA-4.0",
            paper=PAPER,
            description="ResNet-50, joint unsupervised triplets (noise, translation, mixing, "
                        "temporal proximity) on 27.9 h of openly licensed Debian audio",
        ),
    ]
}


def list_models() -> list[str]:
    """Names of the registered pretrained models."""
    return sorted(_REGISTRY)


def get(name: str) -> PretrainedModel | None:
    return _REGISTRY.get(name)
