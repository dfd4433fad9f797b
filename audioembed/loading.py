"""``load_model``: a registry name, a local model folder, or ``hf-hub:org/repo[@revision]``."""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from audioembed import __version__, registry
from audioembed.errors import AudioembedError
from audioembed.model import AudioResNet
from audioembed.model_folder import CONFIG_NAME, WEIGHTS_NAME, ModelFormatError, load_model_folder

HF_PREFIX = "hf-hub:"
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
# The Hub's rule for an organisation or repository name (huggingface_hub's validate_repo_id),
# checked here so that a malformed name is a one-line error rather than its HFValidationError.
_HUB_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")


class ModelNotAvailableError(AudioembedError, RuntimeError):
    """A model whose weights cannot be had here: not released yet, not on the Hub at the asked
    revision, or not in the cache while offline. The message says what to do instead."""


def parse_hub_name(name: str) -> tuple[str, str | None]:
    """``hf-hub:org/repo@rev`` -> ``("org/repo", "rev")``."""
    spec = name[len(HF_PREFIX):]
    repo, at, rev = spec.partition("@")
    if at and not rev:
        raise ModelFormatError(f"bad Hub model name {name!r}: nothing after '@'; name a branch, tag "
                               "or commit (hf-hub:org/repo@revision), or drop the '@' for main")
    if repo.count("/") != 1 or not all(_HUB_PART.fullmatch(p) and "--" not in p and ".." not in p
                                       for p in repo.split("/")):
        raise ModelFormatError(f"bad Hub model name {name!r}; expected hf-hub:org/repo[@revision], "
                               "org and repo made of letters, digits, '-', '_' and '.' (no '--' "
                               "or '..', at most 96 characters each)")
    return repo, rev or None


REGISTRY, FOLDER, HUB, ONNX = "registry", "folder", "hub", "onnx"


@dataclass(frozen=True)
class ModelSpec:
    """What a model name names: a ``kind`` and the fields of that kind.

    ``registry``: ``entry``; ``folder`` and ``onnx`` (an ``.onnx`` file from ``export-onnx``):
    ``path``; ``hub``: ``hub_id`` and ``revision``. ``name`` is the name as given.
    """

    kind: str
    name: str
    entry: registry.PretrainedModel | None = None
    path: Path | None = None
    hub_id: str | None = None
    revision: str | None = None


def parse_model_spec(name_or_path: str | os.PathLike | None = None, revision: str | None = None
                     ) -> ModelSpec:
    """The one reading of a model name: ``hf-hub:org/repo[@revision]``, a registry name
    (default ``registry.DEFAULT_MODEL``), an ``.onnx`` file or a model folder.

    Raises:
        ModelFormatError: the name is none of these, a malformed Hub name, or ``revision``
            is given where it does not apply.
    """
    name = os.fspath(name_or_path) if name_or_path is not None else registry.DEFAULT_MODEL
    if revision is not None and not (isinstance(revision, str) and revision):
        raise ModelFormatError(f"revision={revision!r}: name a branch, tag or commit, or leave it "
                               "unset for main")
    if name.startswith(HF_PREFIX):
        repo, rev = parse_hub_name(name)
        if rev and revision and rev != revision:
            # One revision per load: the name's and the argument's are the same setting.
            raise ModelFormatError(f"two revisions given: {rev!r} in the name and revision={revision!r}; "
                                   "give one (they are the same setting), or the same in both")
        return ModelSpec(HUB, name, hub_id=repo, revision=rev or revision)
    if revision is not None:
        # A silently ignored pin would load something other than what the caller asked for.
        raise ModelFormatError(f"revision={revision!r} applies to hf-hub: names only, not to {name!r}")
    entry = registry.get(name)
    if entry is not None:
        return ModelSpec(REGISTRY, name, entry=entry)
    if name.endswith(".onnx"):
        return ModelSpec(ONNX, name, path=Path(name))
    if Path(name).is_dir():
        return ModelSpec(FOLDER, name, path=Path(name))
    raise ModelFormatError(f"{name!r} is neither a registered model ({', '.join(registry.list_models())}), "
                           "a model folder, nor hf-hub:org/repo[@revision]")


def download_from_hub(repo_id: str, revision: str | None = None, cache_dir: str | None = None,
                      token: str | bool | None = None) -> Path:
    """Fetch ``config.json`` and ``model.safetensors`` (honours HF_HUB_OFFLINE, HF_ENDPOINT).

    Returns the snapshot folder holding both. Hub failures become :class:`ModelNotAvailableError`
    naming the repository, the revision and what to check.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.utils import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                       RepositoryNotFoundError, RevisionNotFoundError)

    what = f"{HF_PREFIX}{repo_id}@{revision or 'main'}"

    def fetch(fname: str, rev: str | None) -> Path:
        return Path(hf_hub_download(repo_id, fname, revision=rev, cache_dir=cache_dir, token=token,
                                    library_name="audioembed", library_version=__version__))

    try:
        config_path = fetch(CONFIG_NAME, revision)
        # The cache stores files under snapshots/<commit>/. Fetching the weights at that commit,
        # not at a branch name again, keeps config and weights from one commit even if the
        # branch moves between the two requests.
        commit = config_path.parent.name
        weights_path = fetch(WEIGHTS_NAME, commit if _COMMIT_RE.fullmatch(commit) else revision)
    except RevisionNotFoundError as exc:
        raise ModelNotAvailableError(
            f"{what}: the repository has no revision {revision!r} on {constants.ENDPOINT}; "
            "check the branch, tag or commit after '@'") from exc
    except RepositoryNotFoundError as exc:  # also gated repositories
        raise ModelNotAvailableError(
            f"{what}: repository not found on {constants.ENDPOINT}, or not accessible; for a private "
            "or gated repository pass token=... or set HF_TOKEN") from exc
    except LocalEntryNotFoundError as exc:
        how = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE
               else f"{constants.ENDPOINT} could not be reached")
        raise ModelNotAvailableError(
            f"{what}: not in the Hub cache ({cache_dir or constants.HF_HUB_CACHE}) and {how}; "
            "load it once online with the same cache_dir") from exc
    except EntryNotFoundError as exc:  # the repository exists but lacks one of the two files
        raise ModelNotAvailableError(
            f"{what}: the repository lacks {CONFIG_NAME} or {WEIGHTS_NAME}; it is not an "
            "audioembed model repository") from exc
    except (HfHubHTTPError, OSError) as exc:  # the server failed, or the cache cannot be written
        raise ModelNotAvailableError(f"{what}: the download failed: {exc}") from exc
    if weights_path.parent != config_path.parent:
        raise ModelFormatError(f"{what}: {CONFIG_NAME} and {WEIGHTS_NAME} came from different "
                               f"snapshots ({config_path.parent} and {weights_path.parent})")
    return config_path.parent


def _load_hub(repo: str, revision: str | None, *, cache_dir: str | None, device, token,
              expected_sha256: str | None = None) -> AudioResNet:
    folder = download_from_hub(repo, revision, cache_dir=cache_dir, token=token)
    model = load_model_folder(folder, device=device, expected_sha256=expected_sha256)
    model.info["source"] = f"{HF_PREFIX}{repo}@{revision or 'main'}"
    model.info["commit"] = folder.name
    return model


def _bundled_folder(entry: registry.PretrainedModel) -> Path:
    folder = Path(str(resources.files("audioembed") / "pretrained" / entry.bundled))
    missing = [folder / name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if entry.has_weights and missing:
        raise ModelNotAvailableError(
            f"the weights of {entry.name!r} are released with this version of audioembed, but "
            f"{missing[0]} is missing from this installation: reinstall audioembed (pip install "
            "--force-reinstall --no-deps audioembed; in a checkout, git checkout -- "
            "audioembed/pretrained)")
    if not entry.has_weights:
        raise ModelNotAvailableError(
            f"the weights of {entry.name!r} are not released in this version of audioembed. "
            "Pass a model folder you trained (python -m training train, then python -m training "
            "export CHECKPOINT DIR) as model=DIR / --model DIR, or a Hub model as "
            "hf-hub:org/repo[@revision]")
    return folder


def _retired_message(entry: registry.PretrainedModel) -> str:
    return (f"{entry.name!r} is no longer bundled with audioembed {__version__}; the last version "
            f"that bundles it is {entry.last_bundled_in} (pip install 'audioembed=="
            f"{entry.last_bundled_in}'). A folder holding those weights loads by path "
            f"(model=DIR / --model DIR); their sha256 is {entry.sha256}")


def load_model(name_or_path: str | os.PathLike | None = None, *, revision: str | None = None,
               cache_dir: str | os.PathLike | None = None, device: str | torch.device | None = None,
               token: str | bool | None = None) -> AudioResNet:
    """Load an embedding model, in eval mode, as fp32 on ``device`` (default CPU).

    ``name_or_path`` is a registry name (see ``list_models()``; default
    ``registry.DEFAULT_MODEL``), a local folder holding ``config.json`` and
    ``model.safetensors``, or ``hf-hub:org/repo[@revision]``. ``revision=`` is the same as
    ``@revision`` (giving both raises unless they are equal); it applies to Hub names only.
    ``embed(model=...)`` and ``--model`` take the ``@revision`` form. Hub downloads honour
    ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``, ``cache_dir`` and ``token``. Nothing is downloaded
    unless a Hub name is given.
    """
    spec = parse_model_spec(name_or_path, revision)
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
    if spec.kind == HUB:
        return _load_hub(spec.hub_id, spec.revision, cache_dir=cache_dir, device=device, token=token)
    if spec.kind == REGISTRY:
        entry = spec.entry
        if entry.hub_id is None and entry.bundled is None:
            raise ModelNotAvailableError(_retired_message(entry))
        if entry.hub_id is not None:
            model = _load_hub(entry.hub_id, entry.revision, cache_dir=cache_dir, device=device,
                              token=token, expected_sha256=entry.sha256)
        else:
            model = load_model_folder(_bundled_folder(entry), device=device,
                                      expected_sha256=entry.sha256)
        model.info["source"] = f"registry:{entry.name}"
        return model
    if spec.kind == ONNX:
        raise ModelFormatError(f"{spec.name}: an ONNX file runs with onnxruntime (embed(model=...) "
                               "and --model pick backend \"onnx\" for it), not as a torch model")
    model = load_model_folder(spec.path, device=device)
    model.info["source"] = str(spec.path.resolve())
    return model


_MODEL_CACHE: dict[tuple[str, str], AudioResNet] = {}


def _on_device(module: torch.nn.Module, device: str | torch.device | None) -> bool:
    if device is None:
        return True
    want = torch.device(device)
    return all(p.device.type == want.type and (want.index is None or p.device.index == want.index)
               for p in module.parameters())


def _inference_view(module: torch.nn.Module, device: str | torch.device | None) -> torch.nn.Module:
    # Inference is deterministic only in eval mode: in training mode BatchNorm would use (and
    # update) batch statistics, so results would depend on the batch. A module the caller is
    # training must stay in training mode on its device, hence a copy rather than .eval()/.to().
    if not any(m.training for m in module.modules()) and _on_device(module, device):
        return module
    view = copy.deepcopy(module).eval()
    return view.to(device) if device is not None else view


def cached_model(model: str | os.PathLike | AudioResNet | None, device: str | torch.device | None
                 ) -> AudioResNet:
    """A loaded model for ``model`` (name, folder, Hub name or instance); loads are cached per
    process, so ``embed()`` called in a loop loads its model once. An instance is returned
    itself when it is in eval mode and on ``device`` (or no device is given); otherwise an eval-mode
    copy on ``device``, so the caller's module is never changed."""
    if isinstance(model, torch.nn.Module):
        return _inference_view(model, device)
    key = (os.fspath(model) if model is not None else "", str(device or "cpu"))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(model, device=device)
    return _MODEL_CACHE[key]
