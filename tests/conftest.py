"""Fixtures shared across test files. Keep each one small and documented; tests run on 2 CPUs."""
from __future__ import annotations

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


FSDD_RECORDINGS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd" / "recordings"


@pytest.fixture
def fsdd_recordings() -> Path:
    """The spoken-digit (FSDD) recordings folder beside the repository; the test is skipped
    where it is absent."""
    if not (FSDD_RECORDINGS / "3_jackson_0.wav").is_file():
        pytest.skip(f"FSDD not found at {FSDD_RECORDINGS}")
    return FSDD_RECORDINGS
