"""What a feature cache offers the paper's samplers: ``python -m training cache-stats CACHE``.

The rules of section 3.2 assume recordings long enough to hold them. Temporal proximity wants
another event within 10 s of the anchor; on a corpus of short sound-effect files the positive
it can draw overlaps the anchor itself, and the rule turns into a small time translation. This
measures that on the cache training reads: file lengths in windows, and, from the temporal
proximity sampler's own draws, how far its positives lie from their anchors.
"""
from __future__ import annotations

import numpy as np

from audioembed import frontend
from training.feature_cache import FeatureCache
from training.samplers import TemporalProximity

T = frontend.WINDOW_FRAMES


def describe(cache: FeatureCache, max_offset_frames: int = 1000, draws: int = 20000, seed: int = 0) -> dict:
    """File-length shares and ``draws`` temporal-proximity (anchor, positive) offsets."""
    frames = cache.file_frames
    fps = frontend.FRAMES_PER_SECOND
    full = frames >= T + max_offset_frames  # files with room for a positive max_offset away
    tp = TemporalProximity(max_offset_frames=max_offset_frames)
    rng = np.random.default_rng(seed)
    offsets = np.empty(draws, dtype=np.int64)
    for i in range(draws):
        _, rec, start = tp.anchor(cache, rng)
        offsets[i] = abs(tp.positive_start(cache, rng, rec, start) - start)
    return {
        "files": int(len(frames)),
        "recordings": int(cache.num_recordings),
        "hours": float(frames.sum() / fps / 3600),
        "median_file_seconds": float(np.median(frames) / fps),
        "files_one_window_or_less": float(np.mean(frames <= T)),
        "files_under_two_windows": float(np.mean(frames < 2 * T)),
        "files_with_full_offset": float(np.mean(full)),
        "hours_in_files_with_full_offset": float(frames[full].sum() / fps / 3600),
        "tp_draws": draws,
        "tp_max_offset_seconds": max_offset_frames / fps,
        "tp_positive_is_anchor": float(np.mean(offsets == 0)),
        "tp_positive_overlaps_anchor": float(np.mean(offsets < T)),
        "tp_median_offset_seconds": float(np.median(offsets) / fps),
    }


def format_stats(s: dict) -> str:
    w = T / frontend.FRAMES_PER_SECOND
    return "\n".join([
        f"{s['files']} files in {s['recordings']} recordings, {s['hours']:.1f} h; median file "
        f"{s['median_file_seconds']:.2f} s",
        f"files of at most one window ({w:g} s): {100 * s['files_one_window_or_less']:.1f}%; "
        f"shorter than two windows: {100 * s['files_under_two_windows']:.1f}%; long enough for a "
        f"positive {s['tp_max_offset_seconds']:g} s away: {100 * s['files_with_full_offset']:.1f}% "
        f"({s['hours_in_files_with_full_offset']:.1f} h)",
        f"temporal proximity (±{s['tp_max_offset_seconds']:g} s), {s['tp_draws']} draws of its "
        f"sampler: positive overlaps its anchor {100 * s['tp_positive_overlaps_anchor']:.1f}% "
        f"(is the anchor {100 * s['tp_positive_is_anchor']:.1f}%), median offset "
        f"{s['tp_median_offset_seconds']:.2f} s",
    ])
