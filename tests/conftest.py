"""Fixtures shared across test files. Keep each one small and documented; tests run on 2 CPUs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audioembed import AudioResNet, ModelConfig, save_model_folder

# A ResNet with one block per stage and 8 base channels: the real architecture, ~0.16 M
# parameters, fast enough to embed dozens of windows per test.
TINY_MODEL_CONFIG = ModelConfig(layers=(1, 1, 1, 1), base_width=8)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A release-format model folder (config.json + model.safetensors) with seeded random weights."""
    torch.manual_seed(0)
    return save_model_folder(AudioResNet(TINY_MODEL_CONFIG), tmp_path_factory.mktemp("tiny_model"))


def write_wav(path: str | Path, samples: np.ndarray | None = None, *, sr: int = 16_000,
              seconds: float = 1.0, channels: int = 1, subtype: str | None = None,
              seed: int = 0) -> Path:
    """Write ``samples`` ((n,) or (n, channels)), or seeded noise of ``seconds``, to ``path``.

    The format follows the extension (soundfile); ``subtype`` picks e.g. PCM_U8, PCM_24, FLOAT.
    Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if samples is None:
        rng = np.random.default_rng(seed)
        shape = (int(round(seconds * sr)), channels) if channels > 1 else (int(round(seconds * sr)),)
        samples = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    sf.write(path, samples, sr, subtype=subtype)
    return path


@pytest.fixture
def make_wav(tmp_path):
    """``make_wav("a/b.wav", ...)``: :func:`write_wav` relative to the test's ``tmp_path``."""
    def make(name: str, samples: np.ndarray | None = None, **kwargs) -> Path:
        return write_wav(tmp_path / name, samples, **kwargs)
    return make


@pytest.fixture
def one_thread():
    """Torch on one intra-op thread for the test, as torchrun's workers run (OMP_NUM_THREADS=1).

    Runs being compared then do the same convolutions; and on a loaded 2-core machine many small
    forward passes are far faster on one thread (no OpenMP barrier waits on a busy core).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


UNRELEASED = "unreleased-test-model"


@pytest.fixture
def unreleased_model(monkeypatch) -> str:
    """A registry name whose weights are not released (as the default was before its release)."""
    from audioembed import registry

    entry = registry.PretrainedModel(
        name=UNRELEASED, bundled=UNRELEASED, sha256=None, license="test",
        paper=registry.PAPER, description="registered, weights not released")
    monkeypatch.setitem(registry._REGISTRY, UNRELEASED, entry)
    return UNRELEASED


@pytest.fixture(scope="session")
def fsdd_recordings() -> Path:
    """The FSDD recordings folder as the evaluator finds it (``$AUDIOEMBED_FSDD``, else
    ``../shared/data/fsdd/recordings`` beside the repository); a test that asks for it is skipped
    where the recordings are absent."""
    from training.evaluation.datasets import FSDD_ENV, fsdd_root

    root = fsdd_root()
    if not (root / "3_jackson_0.wav").is_file():
        pytest.skip(f"FSDD recordings not found in {root} (set {FSDD_ENV} to their folder)")
    return root


@pytest.fixture
def bad_files(tmp_path, make_wav) -> dict[str, tuple[Path, str]]:
    """One file of each kind of bad input, made in ``tmp_path / "bad"``: kind -> (path, the phrase
    its one-line failure must contain)."""
    wav = make_wav("_template.wav", seconds=0.5).read_bytes()
    d = tmp_path / "bad"
    d.mkdir()
    cases = {}

    def add(key, name, content, phrase):
        path = d / name
        if content is not None:
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        cases[key] = (path, phrase)

    add("empty file", "empty.wav", b"", "empty file (0 bytes)")
    zero = d / "zero_length.wav"
    sf.write(zero, np.zeros(0, np.float32), 16000)
    cases["zero-length audio"] = (zero, "zero-length audio")
    add("corrupt header", "corrupt.wav", wav[:12] + b"fmt " + b"\x00" * 8, "corrupt or truncated WAV header")
    add("text named .wav", "notes.wav", "title,artist\nsong,band\n", "is a text file, not audio")
    add("unsupported format", "movie.m4a", b"\x00\x00\x00\x20ftypM4A " + bytes(range(256)) * 4,
        "unsupported format (MP4/M4A/AAC)")
    add("unknown extension", "blob.xyz", bytes(range(256)) * 4, "unsupported format '.xyz'")
    nan = np.full(8000, 0.1, np.float32)
    nan[100] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    cases["NaN samples"] = (d / "nan.wav", "NaN or infinite samples")
    inf = np.full(8000, 0.1, np.float32)
    inf[-1] = np.inf
    sf.write(d / "inf.wav", inf, 16000, subtype="FLOAT")
    cases["inf samples"] = (d / "inf.wav", "NaN or infinite samples")
    add("missing path", "does_not_exist.wav", None, "no such file")
    os.symlink(d / "gone.wav", d / "dangling.wav")
    cases["broken symlink"] = (d / "dangling.wav", "broken symbolic link")
    return cases
