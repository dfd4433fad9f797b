"""Export: a checkpoint becomes a release folder that ``audioembed.load_model`` loads and uses."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audioembed
from training.config import load_config
from training.export import write_model_card
from training.feature_cache import build_cache
from training.checkpoint import load_checkpoint
from training.trainer import train

pytestmark = pytest.mark.slow  # trains the checkpoint it exports; a subprocess

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    audio = tmp / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        sf.write(audio / f"a{i}.wav", (0.3 * rng.standard_normal(24000)).astype(np.float32), 16000)
    build_cache(audio, tmp / "cache", progress=False)
    cfg = tmp / "c.toml"
    cfg.write_text(f'[data]\ncache = "{tmp / "cache"}"\n[model]\nlayers = [1, 1, 1, 1]\nbase_width = 8\n'
                   '[train]\nbatch_size = 4\nsteps = 2\n[runtime]\ndevice = "cpu"\nthreads = 1\n')
    train(load_config(cfg), tmp / "run", echo=lambda s: None)
    return tmp / "run" / "checkpoint.pt", audio / "a0.wav"


def assert_release_state(model: torch.nn.Module, state: dict) -> None:
    got = model.state_dict()
    assert got.keys() == state.keys()
    for k, v in state.items():
        want = v.half().float() if v.is_floating_point() else v
        assert got[k].dtype == (torch.float32 if v.is_floating_point() else v.dtype), k
        assert torch.equal(got[k], want), k
    assert any(k.endswith("running_var") and not torch.equal(v, torch.ones_like(v)) for k, v in state.items())
    assert state["bn1.num_batches_tracked"].item() == 2


def test_export_loads_and_embeds(checkpoint, tmp_path):
    ckpt, wav = checkpoint
    out = tmp_path / "model"
    res = subprocess.run([sys.executable, "-m", "training", "export", str(ckpt), str(out), "--name", "tiny-test"],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    model = audioembed.load_model(out)
    assert f"sha256 of model.safetensors: {model.info['sha256']}" in res.stdout
    prov = model.info["config"]["provenance"]
    assert prov["name"] == "tiny-test" and prov["steps"] == 2 and prov["triplets_seen"] == 8
    assert len(prov["data_manifest_sha256"]) == 64 and prov["training_config"]["model"]["base_width"] == 8
    assert prov["date"] and "git_commit" in prov
    assert [(c["from_step"], c["world_size"]) for c in prov["training_code"]] == [(0, 1)]
    e = audioembed.embed(str(wav), model=model)
    assert e.shape == (128,) and abs(float(np.linalg.norm(e)) - 1) < 1e-4
    # The release holds the checkpoint's whole state, BatchNorm buffers included (trained for
    # two steps, so they are no longer their initial values): floats rounded to fp16, the
    # batch counters exact.
    assert_release_state(model, load_checkpoint(ckpt)["model"])
    card = write_model_card(out, "org/tiny", prov).read_text()
    assert "hf-hub:org/tiny" in card and prov["data_manifest_sha256"] in card
    assert json.loads((out / "config.json").read_text())["provenance"]["world_size"] == 1


def test_push_to_hub_uploads_the_folder_with_a_card(checkpoint, tmp_path, monkeypatch):
    import huggingface_hub

    from training.export import export_checkpoint, push_to_hub

    calls = []
    uploaded = tmp_path / "uploaded"

    class FakeApi:
        """Records the calls, and keeps a copy of the folder as it was when uploaded."""

        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, exist_ok=False):
            calls.append(("create_repo", repo_id, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(("upload_folder", repo_id))
            shutil.copytree(folder_path, uploaded)
            return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/abc",
                                              commit_message=commit_message, commit_description="",
                                              oid="abc")

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    folder = export_checkpoint(checkpoint[0], tmp_path / "m", name="tiny")
    url = push_to_hub(folder, "org/tiny", token="t0k")
    # The client's CommitInfo is a str subclass; a plain URL string is handed back.
    assert type(url) is str and url.endswith("/org/tiny/commit/abc")
    assert calls == [("token", "t0k"), ("create_repo", "org/tiny", True), ("upload_folder", "org/tiny")]
    assert sorted(p.name for p in uploaded.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    # What went up is a working release of the checkpoint, with a card written for this repo.
    model = audioembed.load_model(uploaded)
    assert_release_state(model, load_checkpoint(checkpoint[0])["model"])
    prov = model.info["config"]["provenance"]
    card = (uploaded / "README.md").read_text()
    assert "hf-hub:org/tiny" in card and prov["data_manifest_sha256"] in card
    assert f"Trained for {prov['steps']} steps on {prov['triplets_seen']} triplets" in card
