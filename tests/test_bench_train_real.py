"""``benchmarks/bench_train.py --real`` on a tiny model: the trainer's loop beside the bare step."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

TINY = """
[data]
cache = "unused"
[model]
layers = [1, 1, 1, 1]
base_width = 8
[train]
batch_size = 4
steps = 1000
checkpoint_every = 4
log_every = 2
[loss]
kind = "soft-margin"
xbm_size = 64
[schedule]
kind = "cosine"
warmup_triplets = 8
total_triplets = 200
[runtime]
threads = 1
bf16 = false
[dev]
dataset = "unused"
every = 6
max_windows = 2
"""


@pytest.mark.slow  # trains
def test_real_mode_reports_loop_and_bare_rates(tmp_path, capsys, monkeypatch):
    import real_loop

    # A smaller corpus-like cache and dev set keep the test short; the shapes are the same.
    monkeypatch.setattr(real_loop, "CORPUS_FILES", 40)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY)
    real_loop.run_real(recipe, steps=12, overrides=[], warmup=1, bare_steps=2)
    out = capsys.readouterr().out
    bare = float(re.search(r"bare fwd\+bwd\+Adam:\s+([\d.]+) triplets/s", out).group(1))
    loop = re.search(r"trainer loop:\s+([\d.]+) triplets/s .* over (\d+) steps; checkpoints ([\d.]+) s", out)
    assert bare > 0 and float(loop.group(1)) > 0
    assert int(loop.group(2)) == 10  # 12 steps logged every 2; the first interval is warm-up
    assert re.search(r"loop / bare:\s+[\d.]+", out)
    assert re.search(r"with dev tracking:\s+[\d.]+ triplets/s\s+\([\d.]+ s per measurement, every 6 steps\)", out)
    assert "CPU flags:" in out


def test_corpus_like_cache_has_the_corpus_length_spread(tmp_path):
    import numpy as np
    import real_loop
    from training.feature_cache import FeatureCache

    real_loop.corpus_like_cache(tmp_path, files=200)
    cache = FeatureCache(tmp_path)
    lengths = np.array([len(cache.frames(r)) for r in range(cache.num_recordings)])
    assert cache.num_files == 200
    assert 150 < np.median(lengths) < 400 and lengths.max() > 2000
