"""Pretrained models that ``load_model`` knows by name (cf. timm's pretrained configs)."""
from __future__ import annotations

from dataclasses import dataclass

PAPER = ("A. Jansen et al., 'Unsupervised Learning of Semantic Audio Representations', "
         "ICASSP 2018, arXiv:1711.02209")


@dataclass(frozen=True)
class PretrainedModel:
    """A registered model: where its weights are (a folder bundled with the package, or a
    Hugging Face Hub repository at a revision) and the sha256 they are checked against."""

    name: str
    license: str
    paper: str
    description: str
    sha256: str | None = None  # of model.safetensors; None while the weights are not released
    bundled: str | None = None  # folder under audioembed/pretrained
    hub_id: str | None = None  # "org/repo"
    revision: str | None = None  # branch, tag or commit of hub_id (None: main)
    # The last package version whose wheel bundles these weights, for a release no longer
    # bundled: the wheel holds only the newest releases, and a pinned name must never load
    # other weights. With hub_id it loads from there (checked against sha256); without, loading
    # fails and names that version.
    last_bundled_in: str | None = None

    def __post_init__(self):
        retired_offline = self.last_bundled_in is not None and self.hub_id is None
        if not retired_offline and (self.bundled is None) == (self.hub_id is None):
            raise ValueError(f"registry entry {self.name!r}: give bundled or hub_id, not both")
        if self.last_bundled_in is not None and (self.bundled is not None or self.sha256 is None):
            raise ValueError(f"registry entry {self.name!r}: a release no longer bundled has a "
                             "sha256 and no bundled folder")
        if self.revision is not None and self.hub_id is None:
            raise ValueError(f"registry entry {self.name!r}: revision applies to hub_id only")

    @property
    def has_weights(self) -> bool:
        """Whether the weights are released (and so have a sha256 to check)."""
        return self.sha256 is not None

    @property
    def identifier(self) -> str:
        """The name as a Python identifier (torch.hub entry points): ``-`` and ``.`` become ``_``."""
        return self.name.replace("-", "_").replace(".", "_")

    @property
    def source(self) -> str:
        """Where the weights come from, as ``info`` prints it: ``bundled:FOLDER`` or
        ``hf-hub:org/repo@revision``."""
        if self.bundled is not None:
            return f"bundled:{self.bundled}"
        if self.hub_id is None:
            return f"bundled up to audioembed {self.last_bundled_in}"
        return f"hf-hub:{self.hub_id}" + (f"@{self.revision}" if self.revision else "")


DEFAULT_MODEL = "triplet-resnet50-joint"

_V02 = dict(
    last_bundled_in="0.3.0",
    license="CC-BY-SA-4.0",
    paper=PAPER,
    sha256="0415adb4b3dc3dfdfd1d2d3c4f9605c3af0301cb026433406673f357b57e38ff",
    description="ResNet-50, joint unsupervised triplets (noise, translation, mixing, "
                "temporal proximity) on 27.9 h of openly licensed Debian audio (release v0.2)",
)
_V03 = dict(
    last_bundled_in="0.4.0",
    license="CC-BY-SA-4.0",
    paper=PAPER,
    sha256="0dd82f15630b9663a6413a15912e132d49f3b4d54b516d5004fa094a1f431ad4",
    description="ResNet-50, joint unsupervised triplets (noise, translation, mixing, "
                "temporal proximity); v0.2 trained on with soft-margin triplets over a "
                "cross-batch memory on 29.0 h of openly licensed Debian audio (release v0.3)",
)

_V04 = dict(
    bundled="triplet-resnet50-joint-v0.4",
    license="CC-BY-SA-4.0",
    paper=PAPER,
    sha256="de6671b93490202866e2e65b4458e3d1201bebf1807e7d00d3a59ae0a22767db",
    description="ResNet-50, joint unsupervised triplets (noise, translation, mixing, "
                "temporal proximity); v0.3 trained on for 200,000 triplets with the same recipe "
                "on 31.3 h of openly licensed audio: the Debian corpus plus field and foley "
                "recordings (release v0.4)",
)

_V05 = dict(
    bundled="triplet-resnet50-joint",
    license="CC-BY-SA-4.0",
    paper=PAPER,
    sha256="24c972bc5a3af8d05f9ae97ca722735814bc101b0e7df4a69f8218be017b39c7",
    description="ResNet-50, joint unsupervised triplets (noise, translation, mixing, "
                "temporal proximity); v0.4 trained on for 100,000 triplets with a "
                "recording-conditions augmentation, then 20,000 without, on 33.4 h of openly "
                "licensed audio: corpus v3.1, the Debian corpus plus field, foley and speech "
                "recordings (release v0.5)",
)

# DEFAULT_MODEL names the newest release; "-vX.Y" names stay on their weights for good, so a
# pipeline that pins one (or an experiment that starts from one) never changes under it.
_REGISTRY = {
    m.name: m for m in [
        PretrainedModel(name="triplet-resnet50-joint", **_V05),
        PretrainedModel(name="triplet-resnet50-joint-v0.5", **_V05),
        PretrainedModel(name="triplet-resnet50-joint-v0.4", **_V04),
        PretrainedModel(name="triplet-resnet50-joint-v0.3", **_V03),
        PretrainedModel(name="triplet-resnet50-joint-v0.2", **_V02),
    ]
}


def list_models() -> list[str]:
    """Names of the registered pretrained models."""
    return sorted(_REGISTRY)


def get(name: str) -> PretrainedModel | None:
    return _REGISTRY.get(name)


def released() -> list[PretrainedModel]:
    """The registered models whose weights are released, by name."""
    return [_REGISTRY[name] for name in list_models() if _REGISTRY[name].has_weights]
