"""``python -m training cache-stats``: file-length shares and temporal proximity's offsets."""
from __future__ import annotations

import numpy as np
import pytest

from training.cache_stats import describe
from training.cli import main
from training.feature_cache import CacheWriter, FeatureCache
from helpers_cli import cli

F = 64


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("stats-cache")
    rng = np.random.default_rng(0)
    with CacheWriter(out, block_frames=4096) as w:
        for i, n in enumerate([50, 150, 2000]):  # one window; 1.5 windows; 20 s
            w.add(f"f{i}", rng.uniform(0.5, 4.0, size=(n, F)).astype(np.float32), recording=f"r{i}", order=i)
    return out


def test_describe_measures_lengths_and_proximity_offsets(cache_dir):
    s = describe(FeatureCache(cache_dir), max_offset_frames=1000, draws=4000)
    assert s["files"] == 3 and s["hours"] == pytest.approx(2200 / 100 / 3600)
    assert s["files_one_window_or_less"] == pytest.approx(1 / 3)
    assert s["files_under_two_windows"] == pytest.approx(2 / 3)
    assert s["files_with_full_offset"] == pytest.approx(1 / 3)
    # Anchors come from the two longer files, half each. In the 150-frame file every positive
    # starts within 54 frames of its anchor (overlapping it); in the 20 s file, positives are
    # spread over +-1000 frames, and fewer than 15% lie within a window of the anchor.
    assert s["tp_positive_is_anchor"] == 0
    assert 0.5 < s["tp_positive_overlaps_anchor"] < 0.62
    # Half the draws (the short file) lie within 0.54 s; the long file's are mostly farther.
    assert 0.3 < s["tp_median_offset_seconds"] <= 0.54


def test_cli_prints_the_shares(cache_dir):
    res = cli("cache-stats", cache_dir, "--draws", "500", command=main)
    assert res.exit_code == 0, res.output
    assert "3 files in 3 recordings" in res.output and "33.3%" in res.output
    assert "positive overlaps its anchor" in res.output
    bad = cli("cache-stats", cache_dir.parent, command=main)
    assert bad.exit_code != 0 and "not a feature cache" in bad.output
