"""The bundled default model against its stored outputs (OpenL3-style regression fixture).

Catches silent changes anywhere between samples and embeddings: frontend constants, resampling,
windowing, weight loading, the network. The tolerance allows for BLAS and CPU differences only.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).with_name("fixtures")
sys.path.insert(0, str(FIXTURES))
from make_default_model_fixture import OUT, RATES, SR, signal  # noqa: E402

from audioembed import embed, load_model  # noqa: E402

pytestmark = pytest.mark.slow  # the bundled ResNet-50 over the fixture's windows at two rates

ATOL = 1e-4


@pytest.fixture(scope="module")
def stored():
    return np.load(OUT)


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def live(model):
    """The model's window embeddings of the fixture signal, computed now, at each rate."""
    return {sr: embed(signal(sr), sr, model=model, windows=True, hop=0.5) for sr in RATES}


def test_fixture_belongs_to_the_bundled_weights(stored, model):
    assert str(stored["sha256"]) == model.info["sha256"], (
        "the bundled weights changed: run python tests/fixtures/make_default_model_fixture.py")


@pytest.mark.parametrize("sr", RATES)
def test_default_model_reproduces_its_stored_embeddings(stored, live, sr):
    # At 44.1 kHz the resampler is part of the path being pinned.
    out = live[sr]
    np.testing.assert_allclose(out.timestamps, stored[f"times_{sr}"], atol=1e-9)
    np.testing.assert_allclose(out.window_embeddings, stored[f"windows_{sr}"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(out.embedding, stored[f"embedding_{sr}"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("sr", RATES)
def test_trained_weights_separate_the_fixture_sounds(live, sr):
    # The same sound maps together and different sounds apart. A randomly initialised ResNet
    # maps every input to nearly the same point (cosines ~0.998 between spoken digits).
    # Computed live, so a broken model fails here even with a fixture regenerated from it.
    out = live[sr]
    w = out.window_embeddings.astype(np.float64)
    start = np.round(out.timestamps - 0.48, 2)
    # Windows starting at 0.5 and 1.0 s hold only the tone (the one at 0 starts in padding).
    tone, tone_later, noise = (w[np.flatnonzero(start == s)[0]] for s in (0.5, 1.0, 3.0))
    assert float(tone @ tone_later) > 0.99
    assert float(tone @ noise) < 0.5
