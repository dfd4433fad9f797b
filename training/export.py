"""Turn a training checkpoint into the release format (``audioembed.model_folder``), with
provenance, and optionally upload it to the Hugging Face Hub."""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from audioembed.model_folder import save_model_folder
from audioembed.outputs import atomic_write
from training.checkpoint import git_commit, load_checkpoint, model_from_checkpoint

_CARD = """---
library_name: audioembed
tags:
- audio
- audio-embedding
- triplet-loss
license: cc-by-sa-4.0
---

# {name}

A 128-d semantic audio embedding: a ResNet trained with triplet loss on label-free triplets,
reproducing Jansen et al., "Unsupervised Learning of Semantic Audio Representations"
(ICASSP 2018).

```python
from audioembed import embed
e = embed("clip.wav", model="hf-hub:{repo}")
```

Trained for {steps} steps on {triplets} triplets (samplers: {samplers}).
Data manifest sha256: `{manifest}`. Code commit: `{commit}`. Exported {date}.
"""


def provenance(ckpt: dict, name: str | None) -> dict:
    """Where the weights came from: data, amount of training, configuration, code, date."""
    data = ckpt.get("data", {})
    return {
        "name": name,
        "method": "triplet loss on label-free triplets (Jansen et al., ICASSP 2018)",
        "data_manifest": data.get("manifest"),
        "data_manifest_sha256": data.get("manifest_sha256"),
        "steps": int(ckpt["step"]),
        "triplets_seen": int(ckpt["triplets_seen"]),
        "training_seconds": float(ckpt.get("elapsed_s", 0.0)),
        "world_size": int(ckpt.get("world_size", 1)),
        "training_config": ckpt["config"],
        # The code that trained it: one entry per start or resume of the run (checkpoints
        # written before this was recorded have none), and the tree that exported it.
        "training_code": list(ckpt.get("code", [])),
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def export_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                      name: str | None = None, extra: dict | None = None) -> Path:
    """Write ``out_dir`` (fp16 ``model.safetensors`` + ``config.json``) from a checkpoint;
    ``extra`` adds keys to the provenance (``adapt``'s lineage)."""
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    prov = {**provenance(ckpt, name or Path(out_dir).name), **(extra or {})}
    return save_model_folder(model, out_dir, provenance=prov)


def write_model_card(folder: str | os.PathLike, repo_id: str, prov: dict) -> Path:
    path = Path(folder) / "README.md"
    samplers = ", ".join(sorted(prov["training_config"].get("samplers", {}))) or "?"
    text = _CARD.format(name=prov.get("name") or repo_id, repo=repo_id, steps=prov["steps"],
                        triplets=prov["triplets_seen"], samplers=samplers,
                        manifest=prov["data_manifest_sha256"], commit=prov["git_commit"],
                        date=prov["date"])
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def push_to_hub(folder: str | os.PathLike, repo_id: str, token: str | None = None) -> str:
    """Upload an exported folder (with a model card) to ``repo_id``; returns the commit URL."""
    from huggingface_hub import HfApi

    from audioembed.model_folder import read_config

    write_model_card(folder, repo_id, read_config(folder)["provenance"])
    api = HfApi(token=token)
    api.create_repo(repo_id, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                             commit_message="Upload audioembed model")
    return str(getattr(info, "commit_url", info))
