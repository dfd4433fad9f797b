"""The corpus builder for the git-repository recordings, on a small made-up source folder."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from training.corpus import github
from training.corpus.cli import corpus
from training.corpus.debian import CorpusError
from training.feature_cache import read_manifest as read_cache_manifest
from helpers_cli import cli

SR = 16000


def _source(tmp_path, durations=(1.0, 2.5), extra_rows=()):
    src = tmp_path / "src"
    (src / "birds").mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for i, d in enumerate(durations):
        rel = f"birds/call_{i}.ogg"
        sf.write(src / rel, 0.1 * rng.standard_normal(int(d * SR)).astype(np.float32), SR, format="OGG")
        rows.append(("ysl", rel, f"{d:.3f}", "Public domain", f"owner/repo@abc:call {i}.mp3"))
    rows.extend(extra_rows)
    with open(src / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([github.COLUMNS, *rows])
    (src / "ATTRIBUTION.md").write_text("credits\n")
    return src


def test_build_copies_verifies_and_reports(tmp_path):
    src = _source(tmp_path)
    out = tmp_path / "corpus" / "github"
    report = github.build(out, src, jobs=1)
    assert report["files"] == 2 and report["copied"] == 2
    assert report["missing"] == [] and report["undecodable"] == [] and report["duration_mismatch"] == []
    assert report["sources"]["ysl"]["files"] == 2
    assert report["sources"]["ysl"]["hours"] == round(3.5 / 3600, 3)
    assert (out / "birds" / "call_1.ogg").read_bytes() == (src / "birds" / "call_1.ogg").read_bytes()
    assert (out / "ATTRIBUTION.md").is_file() and (out / "manifest.csv").is_file()
    assert json.loads((out / "report.json").read_text())["files"] == 2
    # A rerun copies nothing.
    assert github.build(out, src, jobs=1)["copied"] == 0


def test_wrong_duration_and_missing_file_are_reported(tmp_path):
    src = _source(tmp_path, extra_rows=[("ysl", "birds/gone.ogg", "1.000", "CC0", "o/r@c:gone")])
    rows = list(csv.reader(open(src / "manifest.csv")))
    rows[1][2] = "9.000"  # the first file is 1 s long
    with open(src / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    report = github.build(tmp_path / "out", src, jobs=1)
    assert report["missing"] == ["birds/gone.ogg"]
    assert [d["path"] for d in report["duration_mismatch"]] == ["birds/call_0.ogg"]
    result = cli("github", "--source", src, "--out", tmp_path / "o2", command=corpus)
    assert result.exit_code == 1, result.output
    assert "missing: 1" in result.output


@pytest.mark.parametrize("bad", ["../escape.ogg", "/abs.ogg"])
def test_paths_outside_the_folder_are_refused(tmp_path, bad):
    src = _source(tmp_path, extra_rows=[("ysl", bad, "1.0", "CC0", "o/r@c:x")])
    with pytest.raises(CorpusError, match="not a relative path"):
        github.read_manifest(src)


def test_rows_join_a_corpus_manifest_under_the_debian_root(tmp_path):
    src = _source(tmp_path)
    root = tmp_path / "corpus"
    github.build(root / github.PACKAGE, src, jobs=1)
    manifest = tmp_path / "v3.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("package", "path", "duration_s"), *github.corpus_rows(src)])
    entries = read_cache_manifest(manifest, root)
    assert [e.key for e in entries] == ["github/birds/call_0.ogg", "github/birds/call_1.ogg"]
    assert all((root / e.key).is_file() for e in entries)


def test_pinned_v3_manifest_is_the_v3_corpus():
    """unlabeled_v3.csv = unlabeled.csv (same rows, same order) + every shared github row."""
    from training.corpus.debian import RECIPE_DIR

    v3 = list(csv.reader(open(RECIPE_DIR / "unlabeled_v3.csv", newline="")))
    old = list(csv.reader(open(RECIPE_DIR / "unlabeled.csv", newline="")))
    assert [r for r in v3 if r[0] != github.PACKAGE] == old
    added = [r for r in v3 if r[0] == github.PACKAGE]
    assert len(added) == 886
    if github.DEFAULT_SOURCE.is_dir():
        assert sorted((p, path, f"{d:.3f}") for p, path, d in github.corpus_rows()) == \
            sorted((r[0], r[1], f"{float(r[2]):.3f}") for r in added)
