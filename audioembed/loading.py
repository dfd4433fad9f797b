"""``load_model``: a registry name, a local model folder, or ``hf-hub:org/repo[@revision]``."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch

from audioembed import registry
from audioembed.model import AudioResNet
from audioembed.model_folder import CONFIG_NAME, WEIGHTS_NAME, ModelFormatError, load_model_folder

HF_PREFIX = "hf-hub:"


class ModelNotAvailableError(RuntimeError):
    """A known model whose weights are not available here."""


def _version() -> str:
    from audioembed import __version__
    return __version__


def parse_hub_name(name: str) -> tuple[str, str | None]:
    """``hf-hub:org/repo@rev`` -> ``("org/repo", "rev")``."""
    spec = name[len(HF_PREFIX):]
    repo, _, rev = spec.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"bad Hub model name {name!r}; expected hf-hub:org/repo[@revision]")
    return repo, rev or None


def download_from_hub(repo_id: str, revision: str | None = None, cache_dir: str | None = None,
                      token: str | bool | None = None) -> Path:
    """Fetch ``config.json`` and ``model.safetensors`` (honours HF_HUB_OFFLINE, HF_ENDPOINT)."""
    from huggingface_hub import hf_hub_download

    paths = [
        hf_hub_download(repo_id, fname, revision=revision, cache_dir=cache_dir, token=token,
                        library_name="audioembed", library_version=_version())
        for fname in (CONFIG_NAME, WEIGHTS_NAME)
    ]
    return Path(paths[0]).parent


def _bundled_folder(entry: registry.PretrainedModel) -> Path:
    sub = entry.source[len("bundled:"):]
    folder = Path(str(resources.files("audioembed") / "pretrained" / sub))
    if entry.sha256 is None or not (folder / WEIGHTS_NAME).is_file():
        raise ModelNotAvailableError(
            f"the weights of {entry.name!r} are not released in this version of audioembed. "
            "Pass a model folder you trained (python -m training train, then python -m training "
            "export CHECKPOINT DIR) as model=DIR / --model DIR, or a Hub model as "
            "hf-hub:org/repo[@revision]")
    return folder


def load_model(name_or_path: str | os.PathLike | None = None, *, revision: str | None = None,
               cache_dir: str | os.PathLike | None = None, device: str | torch.device | None = None,
               token: str | bool | None = None) -> AudioResNet:
    """Load an embedding model, in eval mode, as fp32 on ``device`` (default CPU).

    ``name_or_path`` is a registry name (see ``list_models()``; default
    ``registry.DEFAULT_MODEL``), a local folder holding ``config.json`` and
    ``model.safetensors``, or ``hf-hub:org/repo[@revision]`` (``revision`` may also be passed
    as an argument). Hub downloads honour ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``cache_dir``
    and ``token``. Nothing is downloaded unless a Hub name is given.
    """
    name = os.fspath(name_or_path) if name_or_path is not None else registry.DEFAULT_MODEL
    if name.startswith(HF_PREFIX):
        repo, rev = parse_hub_name(name)
        if rev and revision and rev != revision:
            raise ValueError(f"two revisions given: {rev!r} in the name and {revision!r}")
        folder = download_from_hub(repo, rev or revision, cache_dir=cache_dir and os.fspath(cache_dir),
                                   token=token)
        model = load_model_folder(folder, device=device)
        model.info["source"] = f"{HF_PREFIX}{repo}@{rev or revision or 'main'}"
        return model
    entry = registry.get(name)
    if entry is not None:
        if entry.source.startswith(HF_PREFIX):
            return load_model(entry.source, cache_dir=cache_dir, device=device, token=token)
        model = load_model_folder(_bundled_folder(entry), device=device, expected_sha256=entry.sha256)
        model.info["source"] = f"registry:{entry.name}"
        return model
    if Path(name).is_dir():
        model = load_model_folder(name, device=device)
        model.info["source"] = str(Path(name).resolve())
        return model
    raise ModelFormatError(f"{name!r} is neither a registered model ({', '.join(registry.list_models())}), "
                           "a model folder, nor hf-hub:org/repo[@revision]")
