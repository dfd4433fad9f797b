"""The release format: a folder with ``config.json`` beside ``model.safetensors``. No pickles.

``config.json``::

    {"format_version": 1, "library": "audioembed", "embedding_dim": 128,
     "model": {...ModelConfig...}, "frontend": {...frontend.config()...},
     "provenance": {...how the weights were made...},
     "weights_sha256": "...sha256 of model.safetensors, checked at load..."}

Weights are stored as fp16 (half the download) and loaded as fp32.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from audioembed import frontend
from audioembed.errors import AudioembedError, InvalidArgumentError
from audioembed.model import AudioResNet, ModelConfig
from audioembed.outputs import atomic_write

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# config.json's record of model.safetensors' sha256, checked at load: a folder whose weights
# were overwritten or damaged is refused, not silently loaded. Folders saved before it was
# written have none (the bundled ones are checked against the registry instead).
WEIGHTS_SHA256_KEY = "weights_sha256"


class ModelFormatError(AudioembedError, ValueError):
    """A model name, folder or file that this version of audioembed cannot or must not load."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# Top-level folders of this repository: an absolute path through one of them is made relative
# to the repository, so a release names files as a clone has them, not as one machine did.
# ("audioembed" is also what a clone itself is usually called, so it counts only as the last
# resort, and its last occurrence.)
_REPO_DIRS = ("training", "benchmarks", "examples", "tests")


def _release_path(path: str) -> str:
    parts = PurePosixPath(path).parts
    # Below a hidden folder (~/.cache/audioembed/...) nothing is part of the repository.
    visible = next((i for i, p in enumerate(parts) if p.startswith(".")), len(parts))
    for i, part in enumerate(parts[:visible]):
        if part in _REPO_DIRS:
            return str(PurePosixPath(*parts[i:]))
    package = [i for i, part in enumerate(parts[:visible]) if part == "audioembed"]
    if package and package[-1] < len(parts) - 1:
        return str(PurePosixPath(*parts[package[-1]:]))
    if len(parts) > 2 and parts[1] == "root":  # root's home folder
        return str(PurePosixPath("~", *parts[2:]))
    if len(parts) > 3 and parts[1] == "home":
        return str(PurePosixPath("~", *parts[3:]))
    return str(PurePosixPath("...", *parts[-2:]))


def release_provenance(provenance):
    """``provenance`` as a release records it: absolute paths made repository-relative (or
    ``~/...`` under a home folder), and a ``git_commit`` ending in ``+dirty`` split into the
    commit and ``git_tree_dirty: true`` (said, not hidden: the tree had uncommitted changes)."""
    if isinstance(provenance, dict):
        out = {}
        for key, value in provenance.items():
            if key == "git_commit" and isinstance(value, str) and value.endswith("+dirty"):
                out[key] = value[:-len("+dirty")]
                out["git_tree_dirty"] = True
            else:
                out[key] = release_provenance(value)
        return out
    if isinstance(provenance, list):
        return [release_provenance(v) for v in provenance]
    if isinstance(provenance, str) and provenance.startswith("/") and "\n" not in provenance:
        return _release_path(provenance)
    return provenance


def save_model_folder(model: AudioResNet, folder: str | os.PathLike, provenance: dict | None = None,
                      dtype: torch.dtype = torch.float16) -> Path:
    """Write ``model`` in the release format; returns the folder."""
    folder = Path(folder)
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if v.is_floating_point():
            cast = v.to(dtype)
            # fp16 tops out at 65504: a weight or BN running variance past it would be stored as
            # inf and silently break every embedding. Refuse rather than write such a release.
            if not torch.isfinite(cast).all() and torch.isfinite(v).all():
                raise InvalidArgumentError(f"{k}: values exceed the range of {dtype} (max |x| = "
                                 f"{v.abs().max().item():.4g}); save with a wider dtype")
            v = cast
        tensors[k] = v.contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    data = save(tensors, metadata={"format": "pt"})
    config = {
        "format_version": FORMAT_VERSION,
        "library": "audioembed",
        "embedding_dim": model.config.embedding_dim,
        "model": model.config.to_dict(),
        "frontend": frontend.config(),
        "provenance": release_provenance(provenance or {}),
        WEIGHTS_SHA256_KEY: hashlib.sha256(data).hexdigest(),
    }
    atomic_write(folder / WEIGHTS_NAME, lambda f: f.write(data))
    atomic_write(folder / CONFIG_NAME,
                 lambda f: f.write((json.dumps(config, indent=2, sort_keys=True) + "\n").encode()))
    return folder


def read_config(folder: str | os.PathLike) -> dict:
    """Read and validate ``config.json``: format version, frontend and model config."""
    path = Path(folder) / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelFormatError(f"{folder}: no {CONFIG_NAME}; not an audioembed model folder") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: invalid JSON ({exc})") from exc
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if not isinstance(config, dict):
        raise ModelFormatError(f"{path}: expected a JSON object, got {type(config).__name__}")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFormatError(f"{path}: format_version {version!r} is not supported by this "
                               f"audioembed (knows {FORMAT_VERSION}); upgrade audioembed")
    if not isinstance(config.get("frontend"), dict):
        raise ModelFormatError(f"{path}: no frontend config; cannot check that this code computes "
                               "the features the model was trained on")
    mismatches = frontend.config_mismatches(config["frontend"])
    if mismatches:
        raise ModelFormatError(f"{path}: the model was trained with a different frontend than this "
                               "code computes; refusing to load. " + "; ".join(mismatches))
    try:
        model_config = ModelConfig.from_dict(config.get("model", {}))
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"{path}: bad model config ({exc})") from exc
    if config.get("embedding_dim") != model_config.embedding_dim:
        raise ModelFormatError(f"{path}: embedding_dim {config.get('embedding_dim')!r} disagrees with "
                               f"the model config's {model_config.embedding_dim}")
    return config


def _check_shapes(model: AudioResNet, weights: Path) -> None:
    """Refuse weights whose tensor names or shapes differ from ``model``'s, reading only the
    file's header."""
    try:
        with safe_open(str(weights), "pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except SafetensorError as exc:
        raise ModelFormatError(f"{weights}: not a readable safetensors file ({exc})") from exc
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong_shape = [f"{k} {shapes[k]} != {v}" for k, v in expected.items()
                   if k in shapes and shapes[k] != v]
    if missing or unexpected or wrong_shape:
        raise ModelFormatError(f"{weights}: weights do not match the config (missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}, wrong shape {wrong_shape[:5]})")


def _check_finite(state: dict[str, torch.Tensor], weights: Path) -> None:
    """Refuse weights holding NaN or infinity: they would make every embedding NaN, which
    extract would then blame on the audio."""
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ModelFormatError(f"{weights}: tensor {k} holds NaN or infinite values; the "
                                   "weights are corrupt (export or download them again)")


def load_model_folder(folder: str | os.PathLike, device: str | torch.device | None = None,
                      expected_sha256: str | None = None) -> AudioResNet:
    """Load a release-format folder as an fp32 model in eval mode, on ``device`` (default CPU).

    ``model.info`` records where it came from (folder, sha256, config).
    """
    folder = Path(folder)
    config = read_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelFormatError(f"{folder}: no {WEIGHTS_NAME}")
    try:
        digest = sha256_file(weights)
    except OSError as exc:
        raise ModelFormatError(f"{weights}: cannot be read ({exc.strerror or exc})") from exc
    if expected_sha256 is not None and digest != expected_sha256:
        raise ModelFormatError(f"{weights}: sha256 {digest} does not match the registry's "
                               f"{expected_sha256}; the file is corrupt or was replaced")
    # Built on the meta device, which allocates nothing, so that a config asking for a huge
    # network is refused by the shape check below before any memory is taken.
    with torch.device("meta"):
        model = AudioResNet(ModelConfig.from_dict(config["model"]))
    _check_shapes(model, weights)
    # After the structural checks, which say more precisely what is wrong with a broken file.
    recorded = config.get(WEIGHTS_SHA256_KEY)
    if recorded is not None and digest != recorded:
        raise ModelFormatError(f"{weights}: sha256 {digest} does not match the {recorded!r} that "
                               f"{CONFIG_NAME} records; the file is corrupt or was replaced")
    try:
        stored = load_file(str(weights))
    except SafetensorError as exc:
        raise ModelFormatError(f"{weights}: not a readable safetensors file ({exc})") from exc
    state = {k: v.float() if v.is_floating_point() else v for k, v in stored.items()}
    _check_finite(state, weights)
    model.load_state_dict(state, assign=True)
    model.info = {"folder": str(folder), "sha256": digest, "config": config}
    model.eval()
    model.to(device=device or "cpu", memory_format=torch.channels_last)
    return model
