"""``load_model("hf-hub:org/repo@rev")``: the real huggingface_hub client against a local Hub.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported, so every load runs in
a fresh interpreter with the environment set; the server listens on 127.0.0.1 only.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audioembed import embed, load_model, registry
from audioembed.loading import ModelNotAvailableError, parse_hub_name
from audioembed.model_folder import CONFIG_NAME, WEIGHTS_NAME, ModelFormatError, save_model_folder, sha256_file
from helpers_cli import cli
from helpers_hub import HubServer, commit_id, tiny_model

REPO_ROOT = Path(__file__).resolve().parent.parent
REPO_ID = "org/tiny-audioembed"
TOKEN = "hf_local_test_token"

# Loads each name in turn (one interpreter start for several loads) and reports one JSON line.
LOADER = r"""
import json, sys
import numpy as np
import torch
from audioembed import embed, load_model
# One intra-op thread on both sides of the comparison: float sums then run in the same order, so
# the same weights give bit-identical embeddings in this interpreter and in the test's.
torch.set_num_threads(1)
jobs = json.loads(sys.argv[1])
out = []
for job in jobs:
    try:
        model = load_model(job["name"], cache_dir=job["cache_dir"], token=job.get("token"))
    except Exception as exc:
        out.append({"error": type(exc).__name__, "message": str(exc)})
        continue
    wave = np.load(job["wave"])
    np.save(job["out"], embed(wave, sr=16000, model=model, windows=True).window_embeddings)
    out.append({"source": model.info["source"], "commit": model.info.get("commit"),
                "folder": model.info["folder"], "sha256": model.info["sha256"]})
print(json.dumps(out))
"""


def run_loader(jobs: list[dict], endpoint: str, hf_home: Path, offline: bool) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update({
        "HF_ENDPOINT": endpoint,
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "HF_HOME": str(hf_home),  # the default cache and the client's own state stay in tmp
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
    })
    proc = subprocess.run([sys.executable, "-c", LOADER, json.dumps(jobs)], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"loader failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory):
    """Serve two tiny models (``main`` and tag ``v1.0``), load them online, stop the server,
    then load again with HF_HUB_OFFLINE=1 from the cache the first run filled."""
    tmp = tmp_path_factory.mktemp("hub")
    folders = {ref: save_model_folder(tiny_model(seed), tmp / f"model-{ref}")
               for ref, seed in (("main", 1), ("v1.0", 2), ("v1.1", 3))}
    wave = tmp / "wave.npy"
    np.save(wave, np.random.default_rng(0).standard_normal(int(2.5 * 16000)).astype(np.float32))
    cache = tmp / "cache"
    hf_home = tmp / "hf_home"

    def job(name: str, tag: str, **kw) -> dict:
        return {"name": name, "cache_dir": str(cache), "wave": str(wave), "out": str(tmp / f"{tag}.npy"), **kw}

    server = HubServer.from_folders(REPO_ID, folders).start()
    try:
        endpoint = server.url
        online = run_loader([
            job(f"hf-hub:{REPO_ID}@v1.0", "on-v1.0", token=TOKEN),
            job(f"hf-hub:{REPO_ID}", "on-main"),
            job(f"hf-hub:{REPO_ID}@v9", "on-v9"),
            job("hf-hub:org/no-such-repo@main", "on-norepo"),
        ], endpoint, hf_home, offline=False)
        requests = list(server.requests)
    finally:
        server.stop()
    offline = run_loader([
        job(f"hf-hub:{REPO_ID}@v1.0", "off-v1.0"),
        job(f"hf-hub:{REPO_ID}@main", "off-main"),
        job(f"hf-hub:{REPO_ID}@v1.1", "off-v1.1"),  # on the server, but never fetched
    ], endpoint, hf_home, offline=True)
    return {"tmp": tmp, "folders": folders, "wave": wave, "cache": cache, "hf_home": hf_home,
            "online": online, "offline": offline, "requests": requests, "server": server}


def folder_windows(folder: Path, wave: Path) -> np.ndarray:
    return embed(np.load(wave), sr=16000, model=load_model(folder), windows=True).window_embeddings


@pytest.mark.slow  # subprocesses (the hub_run fixture)
def test_hub_load_matches_the_folder_at_the_pinned_revision(hub_run, one_thread):
    v10, main = hub_run["online"][:2]
    assert "error" not in v10 and "error" not in main
    assert v10["commit"] == commit_id(f"{REPO_ID}@v1.0")
    assert main["commit"] == commit_id(f"{REPO_ID}@main")
    assert v10["source"] == f"hf-hub:{REPO_ID}@v1.0"
    assert v10["sha256"] == sha256_file(hub_run["folders"]["v1.0"] / WEIGHTS_NAME)
    assert main["sha256"] == sha256_file(hub_run["folders"]["main"] / WEIGHTS_NAME)
    tmp, wave = hub_run["tmp"], hub_run["wave"]
    want_v10 = folder_windows(hub_run["folders"]["v1.0"], wave)
    want_main = folder_windows(hub_run["folders"]["main"], wave)
    np.testing.assert_array_equal(np.load(tmp / "on-v1.0.npy"), want_v10)
    np.testing.assert_array_equal(np.load(tmp / "on-main.npy"), want_main)
    # The pin matters: the two revisions hold different models.
    assert not np.allclose(want_v10, want_main, atol=1e-3)


@pytest.mark.slow  # subprocesses (the hub_run fixture)
def test_hub_download_lands_in_cache_dir_with_client_headers(hub_run):
    cache, hf_home = hub_run["cache"], hub_run["hf_home"]
    snap = cache / f"models--{REPO_ID.replace('/', '--')}" / "snapshots" / commit_id(f"{REPO_ID}@v1.0")
    assert sorted(p.name for p in snap.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    assert not (hf_home / "hub").exists(), "downloads must go to cache_dir, not the default cache"

    reqs = hub_run["server"].file_requests()
    assert {m for m, _, _ in reqs} == {"HEAD", "GET"}
    for _, _, headers in reqs:
        assert "audioembed/" in headers.get("User-Agent", headers.get("user-agent", ""))
    v10 = [h for _, path, h in reqs if "/resolve/v1.0/" in path or
           f"/resolve/{commit_id(f'{REPO_ID}@v1.0')}/" in path]
    assert v10 and all(h.get("authorization", h.get("Authorization")) == f"Bearer {TOKEN}" for h in v10)
    # Weights are fetched at the commit the config resolved to, never at the moving branch name.
    weight_revs = {p.split("/resolve/")[1].split("/")[0] for _, p, _ in reqs if p.endswith(WEIGHTS_NAME)}
    assert weight_revs == {commit_id(f"{REPO_ID}@main"), commit_id(f"{REPO_ID}@v1.0")}


@pytest.mark.slow  # subprocesses (the hub_run fixture)
def test_offline_load_from_the_filled_cache(hub_run):
    off_v10, off_main, _ = hub_run["offline"]
    assert "error" not in off_v10, off_v10
    assert "error" not in off_main, off_main
    tmp = hub_run["tmp"]
    np.testing.assert_array_equal(np.load(tmp / "off-v1.0.npy"), np.load(tmp / "on-v1.0.npy"))
    np.testing.assert_array_equal(np.load(tmp / "off-main.npy"), np.load(tmp / "on-main.npy"))


@pytest.mark.slow  # subprocesses (the hub_run fixture)
def test_offline_uncached_revision_says_so(hub_run):
    err = hub_run["offline"][2]
    assert err.get("error") == "ModelNotAvailableError", err
    assert "v1.1" in err["message"] and "HF_HUB_OFFLINE" in err["message"]


@pytest.mark.slow  # subprocesses (the hub_run fixture)
def test_unknown_revision_fails_clearly(hub_run):
    err = hub_run["online"][2]
    assert err.get("error") == "ModelNotAvailableError", err
    assert "revision 'v9'" in err["message"] and REPO_ID in err["message"]


@pytest.mark.slow  # subprocesses (the hub_run fixture)
def test_unknown_repository_fails_clearly(hub_run):
    err = hub_run["online"][3]
    assert err.get("error") == "ModelNotAvailableError", err
    assert "org/no-such-repo" in err["message"] and "not found" in err["message"]


# -- in-process: the arguments load_model hands to huggingface_hub ------------------------------


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """Replace hf_hub_download with one that records its calls and serves a tiny model folder
    from a cache-shaped snapshot directory."""
    import huggingface_hub

    folder = save_model_folder(tiny_model(5), tmp_path / "src")
    commit = commit_id("fake")
    snap = tmp_path / "cache" / "models--org--repo" / "snapshots" / commit
    snap.mkdir(parents=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        (snap / name).write_bytes((folder / name).read_bytes())
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append({"repo_id": repo_id, "filename": filename, **kwargs})
        return str(snap / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    return {"calls": calls, "commit": commit, "folder": folder, "cache": tmp_path / "cache"}


def test_load_model_passes_revision_cache_dir_token_and_library_name(fake_hub):
    model = load_model("hf-hub:org/repo@v2", cache_dir=fake_hub["cache"], token="tok")
    calls = fake_hub["calls"]
    assert [c["filename"] for c in calls] == [CONFIG_NAME, WEIGHTS_NAME]
    for c in calls:
        assert c["repo_id"] == "org/repo"
        assert c["library_name"] == "audioembed"
        assert c["cache_dir"] == os.fspath(fake_hub["cache"])
        assert c["token"] == "tok"
    assert calls[0]["revision"] == "v2"
    assert calls[1]["revision"] == fake_hub["commit"]  # pinned to the config's commit
    assert model.info["source"] == "hf-hub:org/repo@v2"
    x = np.random.default_rng(1).standard_normal(16000).astype(np.float32)
    np.testing.assert_array_equal(embed(x, sr=16000, model=model),
                                  embed(x, sr=16000, model=load_model(fake_hub["folder"])))


def test_revision_argument_and_conflicts(fake_hub):
    load_model("hf-hub:org/repo", revision="v3")
    assert fake_hub["calls"][0]["revision"] == "v3"
    with pytest.raises(ValueError, match="two revisions"):
        load_model("hf-hub:org/repo@v1", revision="v2")
    with pytest.raises(ValueError, match="hf-hub: names only"):
        load_model(fake_hub["folder"], revision="v2")


def test_registry_hub_entry_checks_sha256(fake_hub, monkeypatch):
    good = sha256_file(fake_hub["folder"] / WEIGHTS_NAME)
    for name, digest in (("hub-good", good), ("hub-bad", "0" * 64)):
        monkeypatch.setitem(registry._REGISTRY, name, registry.PretrainedModel(
            name=name, hub_id="org/repo", revision="v1", sha256=digest, license="CC0-1.0",
            paper=registry.PAPER, description="test entry"))
    assert load_model("hub-good").info["source"] == "registry:hub-good"
    with pytest.raises(ModelFormatError, match="sha256"):
        load_model("hub-bad")


def test_one_revision_setting_for_every_entry_point(fake_hub, monkeypatch, tmp_path):
    from audioembed import loading

    monkeypatch.setattr(loading, "_MODEL_CACHE", {})  # each name below is loaded, not reused
    # The name's @rev and revision= are one setting: equal is fine, different raises.
    load_model("hf-hub:org/repo@v4", revision="v4")
    assert fake_hub["calls"][-2]["revision"] == "v4"
    for bad in ("", 4):
        with pytest.raises(ModelFormatError, match="name a branch, tag or commit"):
            load_model("hf-hub:org/repo", revision=bad)
    with pytest.raises(ModelFormatError, match="nothing after '@'"):
        load_model("hf-hub:org/repo@")
    # embed() and --model take the @rev form and pass it to the Hub as it is.
    x = np.random.default_rng(2).standard_normal(16000).astype(np.float32)
    want = embed(x, sr=16000, model=load_model(fake_hub["folder"]))
    np.testing.assert_array_equal(embed(x, sr=16000, model="hf-hub:org/repo@v5"), want)
    assert fake_hub["calls"][-2]["revision"] == "v5"
    import soundfile as sf

    sf.write(tmp_path / "x.wav", x, 16000)
    res = cli("extract", tmp_path / "x.wav", "-o", tmp_path / "x.npy", "--model", "hf-hub:org/repo@v6", "-q")
    assert res.exit_code == 0, res.output
    assert fake_hub["calls"][-2]["revision"] == "v6"
    res = cli("extract", tmp_path / "x.wav", "-o", tmp_path / "y.npy", "--model", "hf-hub:org/repo@")
    assert res.exit_code == 2 and "nothing after '@'" in res.output


@pytest.mark.parametrize("name", ["hf-hub:repo", "hf-hub:/repo", "hf-hub:a/b/c", "hf-hub:org/", "hf-hub:org/repo@"])
def test_bad_hub_names(name):
    with pytest.raises(ValueError, match="hf-hub:org/repo"):
        parse_hub_name(name)


def test_hub_name_parsing():
    assert parse_hub_name("hf-hub:org/repo@v1.0") == ("org/repo", "v1.0")
    assert parse_hub_name("hf-hub:org/repo") == ("org/repo", None)


def test_bundled_and_unreleased_models_never_touch_the_hub(monkeypatch, unreleased_model):
    import huggingface_hub

    def no_network(*a, **k):
        raise AssertionError("a registry model must not touch the Hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    with pytest.raises(ModelNotAvailableError):
        load_model(unreleased_model)
    assert load_model().info["source"].startswith("registry:")


def test_a_release_no_longer_bundled_loads_from_its_hub_repo(fake_hub, monkeypatch):
    digest = sha256_file(fake_hub["folder"] / WEIGHTS_NAME)
    monkeypatch.setitem(registry._REGISTRY, "old-release", registry.PretrainedModel(
        name="old-release", hub_id="org/repo", revision="v0.1", sha256=digest, license="CC0-1.0",
        paper=registry.PAPER, description="test entry", last_bundled_in="0.1.0"))
    assert load_model("old-release").info["source"] == "registry:old-release"
    assert fake_hub["calls"][0]["revision"] == "v0.1"


def test_a_release_no_longer_bundled_names_the_last_version_that_bundles_it(monkeypatch):
    import huggingface_hub

    def no_network(*a, **k):
        raise AssertionError("a release with no Hub repository must not touch the Hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setitem(registry._REGISTRY, "old-release", registry.PretrainedModel(
        name="old-release", sha256="ab" * 32, license="CC0-1.0", paper=registry.PAPER,
        description="test entry", last_bundled_in="0.1.0"))
    with pytest.raises(ModelNotAvailableError, match=r"audioembed==0\.1\.0.*abab"):
        load_model("old-release")
    with pytest.raises(ValueError, match="no bundled folder"):
        registry.PretrainedModel(name="x", bundled="x", sha256="ab" * 32, license="CC0-1.0",
                                 paper=registry.PAPER, description="", last_bundled_in="0.1.0")
