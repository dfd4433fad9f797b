"""docs/benchmarks.md is generated from benchmarks/results/*.json; every figure keeps its command."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a subprocess
def test_the_committed_benchmarks_page_matches_its_json():
    """What `python benchmarks/report.py --check` checks, on every CI run."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_record_names_its_command_host_and_date():
    records = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    assert records
    for path in records:
        run = json.loads(path.read_text(encoding="utf-8"))
        assert run["command"] and run["title"] and run["date"], path.name
        assert run["host"].get("cpu") and run["host"].get("cpus"), path.name
        assert "cpu_flags" in run["host"], path.name  # null: not recorded, said so on the page
        assert all(len(row) == len(run["columns"]) for row in run["rows"]), path.name


def test_check_fails_on_a_stale_page(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import report
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    results = tmp_path / "results"
    results.mkdir()
    (results / "01.json").write_text(json.dumps({
        "title": "T", "command": "python x.py", "date": "2026-01-01",
        "host": {"cpu": "CPU", "cpus": 2, "cpu_flags": None}, "columns": ["a"], "rows": [["1"]]}))
    out = tmp_path / "benchmarks.md"
    monkeypatch.setattr(report, "RESULTS", results)
    monkeypatch.setattr(report, "OUT", out)
    monkeypatch.setattr(report, "ROOT", tmp_path)
    out.write_text("typed by hand\n")
    assert report.main(["--check"]) == 1
    (tmp_path / "docs").mkdir()
    monkeypatch.setattr(report, "OUT", tmp_path / "docs" / "benchmarks.md")
    assert report.main([]) == 0 and report.main(["--check"]) == 0
    text = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "python x.py" in text and "CPU flags: not recorded" in text
