"""ONNX export and ``embed(..., backend="onnx")``: parity with torch (skipped without onnxruntime)."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from audioembed import embed, load_model
from helpers_cli import cli

TOL = 1e-4


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    res = cli("export-onnx", out, "--model", tiny_model_dir)
    assert res.exit_code == 0, res.output
    assert "max |onnxruntime - torch|" in res.stderr
    return out


def test_graph_has_a_dynamic_batch_and_metadata(exported, tiny_model_dir):
    import onnx

    m = onnx.load(exported)
    [inp], [out] = m.graph.input, m.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert inp.name == "log_mel" and dims(inp)[1:] == [96, 64] and isinstance(dims(inp)[0], str)
    assert out.name == "embedding" and dims(out)[1:] == [128] and dims(out)[0] == dims(inp)[0]
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["sha256"] == load_model(tiny_model_dir).info["sha256"]
    assert '"n_mels": 64' in meta["frontend"]


@pytest.mark.parametrize("batch", [1, 5, 33])
def test_onnxruntime_matches_torch(exported, tiny_model_dir, batch):
    from audioembed.onnx_backend import OnnxModel

    net = load_model(tiny_model_dir)
    x = torch.randn(batch, 96, 64, generator=torch.Generator().manual_seed(batch)) - 4
    with torch.inference_mode():
        want = net(x).numpy()
    onnx_net = OnnxModel(exported)
    got = onnx_net(x)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= TOL
    # Idle intra-op threads sleep, leaving the core to extract's feature worker.
    opts = onnx_net.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_embed_with_the_onnx_backend(exported, tiny_model_dir, make_wav):
    clips = [make_wav(f"c{i}.wav", seconds=s, seed=i) for i, s in enumerate([0.5, 3.2, 1.9])]
    want = embed(clips, model=tiny_model_dir, windows=True)
    for model in (exported, tiny_model_dir):  # an .onnx file, or a model exported in memory
        got = embed(clips, model=model, windows=True, backend="onnx", batch_size=4)
        assert np.abs(got.embedding - want.embedding).max() <= TOL
        for a, b in zip(got.window_embeddings, want.window_embeddings):
            assert np.abs(a - b).max() <= TOL
    with pytest.raises(ValueError, match="CPU"):
        embed(clips[0], model=exported, backend="onnx", device="cuda")


def test_unknown_backend(tiny_model_dir, make_wav):
    with pytest.raises(ValueError, match="backend must be one of torch, onnx"):
        embed(make_wav("a.wav"), model=tiny_model_dir, backend="tensorrt")


def test_missing_onnxruntime_is_a_clear_error(tiny_model_dir, make_wav, tmp_path, monkeypatch):
    for name in ("onnxruntime", "onnxscript", "onnx"):
        monkeypatch.setitem(sys.modules, name, None)  # what `import name` then raises: not installed
    from audioembed import onnx_backend

    monkeypatch.setattr(onnx_backend, "_FILES", {})
    with pytest.raises(ImportError, match=r"needs the optional package 'onnxruntime': pip install 'audioembed\[onnx\]'"):
        embed(make_wav("a.wav"), model=tmp_path / "m.onnx", backend="onnx")
    res = cli("export-onnx", tmp_path / "m.onnx", "--model", tiny_model_dir)
    assert res.exit_code == 1 and "audioembed[onnx]" in res.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_extract_cli_with_the_onnx_backend(exported, tiny_model_dir, make_wav, tmp_path):
    clips = [make_wav(f"e{i}.wav", seconds=s, seed=i) for i, s in enumerate([0.7, 2.5, 4.1])]
    ref = tmp_path / "torch.npz"
    assert cli("extract", *clips, "-o", ref, "--model", tiny_model_dir, "--windows", "-q").exit_code == 0
    for model in (exported, tiny_model_dir):
        out = tmp_path / f"onnx-{len(str(model))}.npz"
        res = cli("extract", *clips, "-o", out, "--model", model, "--backend", "onnx", "--windows", "-q")
        assert res.exit_code == 0, res.output
        with np.load(ref) as want, np.load(out) as got:
            assert list(got["names"]) == list(want["names"])
            assert got["embeddings"].shape == want["embeddings"].shape
            assert got["window_embeddings"].shape[0] == got["offsets"][-1]
            np.testing.assert_array_equal(got["offsets"], want["offsets"])
            np.testing.assert_array_equal(got["timestamps"], want["timestamps"])
            assert np.abs(got["window_embeddings"] - want["window_embeddings"]).max() <= TOL
            assert np.abs(got["embeddings"] - want["embeddings"]).max() <= TOL


def test_default_workers_leave_two_cores_to_a_torch_cpu_network(monkeypatch):
    from audioembed import backends

    monkeypatch.setattr(backends.os, "cpu_count", lambda: 2)
    assert backends.default_workers(None) == 0 and backends.default_workers("cpu") == 0
    # onnxruntime's idle threads sleep (OnnxModel turns spinning off): a worker fills the gaps.
    assert backends.default_workers("cpu", "onnx") == 1 and backends.default_workers(None, "onnx-int8") == 1
    assert backends.default_workers("cuda") == 1
    monkeypatch.setattr(backends.os, "cpu_count", lambda: 16)
    assert backends.default_workers(None) == 1


def test_an_onnx_file_implies_the_onnx_backend(exported, tiny_model_dir, make_wav, tmp_path):
    from audioembed.errors import InvalidArgumentError

    wav = make_wav("a.wav", seconds=2.1, seed=4)
    want = embed(wav, model=exported, backend="onnx")
    np.testing.assert_array_equal(embed(wav, model=exported), want)  # no backend: onnx
    np.testing.assert_array_equal(embed(wav, model=str(exported)), want)
    assert np.abs(want - embed(wav, model=tiny_model_dir)).max() <= TOL
    with pytest.raises(InvalidArgumentError, match=r'is an ONNX network: it runs with backend="onnx"'):
        embed(wav, model=exported, backend="torch")
    # The command line: no --backend picks onnx for an .onnx --model; --backend torch is refused.
    out = tmp_path / "auto.npy"
    res = cli("extract", wav, "-o", out, "--model", exported, "-q")
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(out), want)
    res = cli("extract", wav, "-o", tmp_path / "t.npy", "--model", exported, "--backend", "torch")
    assert res.exit_code == 2 and "not --backend torch" in res.output


def test_pooled_layer_with_a_model_exported_in_memory(tiny_model_dir, make_wav):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    wav = make_wav("p.wav", seconds=2.5, seed=5)
    want = embed(wav, model=tiny_model_dir, layer="pooled", windows=True)
    got = embed(wav, model=tiny_model_dir, backend="onnx", layer="pooled", windows=True)
    width = want.window_embeddings.shape[1]  # the pooled width (2048 for the release network)
    assert got.embedding.shape == want.embedding.shape == (2 * width,)
    assert np.abs(got.window_embeddings - want.window_embeddings).max() <= 1e-3 * np.abs(want.window_embeddings).max()
    # The same loaded model still gives its embedding output with the onnx backend.
    e = embed(wav, model=tiny_model_dir, backend="onnx")
    assert e.shape == (128,) and np.abs(e - embed(wav, model=tiny_model_dir)).max() <= TOL
