"""Lay out the openly licensed recordings gathered from public git repositories.

The source folder (``shared/corpus/github`` beside the repository) holds 16 kHz mono Ogg Opus
files with a ``manifest.csv`` of ``source,path,duration_s,license,origin`` rows, a README and
``ATTRIBUTION.md``. The builder copies every listed file to ``OUT/<path>``, with the manifest,
README and attribution beside them (CC BY files must travel with their credits), decodes each
copy to check it against the manifest's duration, and writes ``OUT/report.json``.

The default ``OUT`` is the pseudo-package ``github`` inside the Debian corpus root, so one
corpus manifest (``package,path,duration_s``, package ``github``) and one ``--root`` cover both
(``training/recipes/debian/unlabeled_v3.csv``). Rerunning copies only what is missing or differs
in size.
"""
from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from audioembed.outputs import atomic_write
from training.corpus.debian import DEFAULT_OUT as DEBIAN_OUT, CorpusError, verify_files

DEFAULT_SOURCE = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "github"
DEFAULT_OUT = f"{DEBIAN_OUT}/github"
PACKAGE = "github"  # the package column of its rows in a corpus manifest
COLUMNS = ("source", "path", "duration_s", "license", "origin")
# Travel with the audio: the licences and credits of every file.
CREDITS = ("manifest.csv", "README.md", "ATTRIBUTION.md")


@dataclass(frozen=True)
class Recording:
    """One manifest row."""

    source: str
    path: str
    duration_s: float
    license: str
    origin: str


def read_manifest(source: Path) -> list[Recording]:
    """The rows of ``source/manifest.csv``, checked for its columns and safe relative paths."""
    manifest = source / "manifest.csv"
    if not manifest.is_file():
        raise CorpusError(f"{manifest}: no such file (pass the folder with --source)")
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise CorpusError(f"{manifest}: expected columns {','.join(COLUMNS)}, got {reader.fieldnames}")
        rows = []
        for line, row in enumerate(reader, start=2):
            path = row["path"]
            if not path or path.startswith("/") or ".." in Path(path).parts:
                raise CorpusError(f"{manifest}: line {line}: {path!r} is not a relative path inside the folder")
            try:
                duration = float(row["duration_s"])
            except ValueError as exc:
                raise CorpusError(f"{manifest}: line {line}: duration_s {row['duration_s']!r}") from exc
            rows.append(Recording(row["source"], path, duration, row["license"], row["origin"]))
    return rows


def _copy(src: Path, dest: Path) -> bool:
    """Copy ``src`` to ``dest`` atomically unless a copy of the same size is there; True if copied."""
    if dest.is_file() and dest.stat().st_size == src.stat().st_size:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as f:
        atomic_write(dest, lambda out: shutil.copyfileobj(f, out))
    return True


def build(out: Path, source: Path = DEFAULT_SOURCE, jobs: int = 2, verify: bool = True) -> dict:
    """Copy, verify and report (see the module docstring); returns the report."""
    out, source = Path(out).expanduser(), Path(source).expanduser()
    rows = read_manifest(source)
    missing = [r.path for r in rows if not (source / r.path).is_file()]
    copied = 0
    for r in rows:
        if r.path not in missing:
            copied += _copy(source / r.path, out / r.path)
    for name in CREDITS:
        if (source / name).is_file():
            _copy(source / name, out / name)
    checked = verify_files([out / r.path for r in rows if r.path not in missing], jobs) if verify else {}
    undecodable, duration_off = [], []
    for r in rows:
        error, duration = checked.get(str(out / r.path), (None, None))
        if error:
            undecodable.append({"path": r.path, "error": error})
        elif duration is not None and abs(duration - r.duration_s) > max(0.1, 0.01 * r.duration_s):
            duration_off.append({"path": r.path, "manifest_s": r.duration_s, "decoded_s": round(duration, 3)})
    by_source: dict[str, dict] = {}
    for r in rows:
        s = by_source.setdefault(r.source, {"files": 0, "hours": 0.0, "licenses": set()})
        s["files"] += 1
        s["hours"] += r.duration_s / 3600
        s["licenses"].add(r.license)
    report = {"out": str(out), "source": str(source), "files": len(rows), "copied": copied,
              "hours": round(sum(r.duration_s for r in rows) / 3600, 3), "verified": verify,
              "sources": {k: {"files": v["files"], "hours": round(v["hours"], 3),
                              "licenses": sorted(v["licenses"])} for k, v in sorted(by_source.items())},
              "missing": missing, "undecodable": undecodable, "duration_mismatch": duration_off}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.json", lambda f: f.write((json.dumps(report, indent=2) + "\n").encode()))
    return report


def corpus_rows(source: Path = DEFAULT_SOURCE) -> list[tuple[str, str, float]]:
    """``(package, path, duration_s)`` rows for a corpus manifest (package :data:`PACKAGE`)."""
    return [(PACKAGE, r.path, r.duration_s) for r in read_manifest(Path(source))]


def format_summary(report: dict) -> str:
    lines = [f"{name:<12} {s['files']:5d} files {s['hours']:6.3f} h  {'; '.join(s['licenses'])}"
             for name, s in report["sources"].items()]
    lines.append(f"{report['files']} files, {report['hours']} h -> {report['out']} "
                 f"({report['copied']} copied now)")
    lines.append(f"missing: {len(report['missing'])}; undecodable: {len(report['undecodable'])}; "
                 f"duration unlike the manifest: {len(report['duration_mismatch'])}")
    return "\n".join(lines)
