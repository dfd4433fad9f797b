"""Labeled evaluation sets: one common form (:class:`LabeledDataset`) and the loaders that make it.

A dataset is a list of segments (audio files), each with one or more labels, optionally an
official fold and a group. A *group* is a set of segments that must never be split between
training and test (one speaker, one Debian package, one source recording), because they share
more than their label and would inflate the scores.

``--dataset`` accepts:

- ``fsdd`` / ``fsdd-speaker``: the Free Spoken Digit Dataset; label = digit (group = speaker),
  or label = speaker (no group: every speaker is every class of its own, so a group-aware split
  is impossible; each file is its own group).
- ``debian-sfx``: the labeled Debian sound-effects set over a built corpus folder;
  ``debian-sfx-eval`` and ``debian-sfx-topline-train``: its two package-disjoint parts of
  ``training/recipes/debian/paper_split.csv`` (the paper-tables split: the explicit-label topline
  trains on one, every row is evaluated on the other).
- ``esc50`` or an ESC-50 folder (``meta/esc50.csv`` + ``audio/``), with its official folds.
- an AudioSet segments CSV (``YTID, start_seconds, end_seconds, positive_labels``).
- any other ``.csv``: a manifest ``path,labels[,fold][,group]`` (multi-labels joined by ``;``).
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audioembed.audio_io import audio_files
from audioembed.errors import AudioembedError

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_ROOT = REPO_ROOT.parent / "shared"
FSDD_ENV = "AUDIOEMBED_FSDD"
FSDD_DEFAULT = SHARED_ROOT / "data" / "fsdd" / "recordings"
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset"
DEBIAN_LABELS = REPO_ROOT / "training" / "recipes" / "debian" / "labeled.csv"
DEBIAN_LABELS_FALLBACK = SHARED_ROOT / "corpus" / "labeled.csv"
DEBIAN_SPLIT = REPO_ROOT / "training" / "recipes" / "debian" / "paper_split.csv"
DEBIAN_PARTS = ("eval", "topline-train")
DEBIAN_CORPUS_DEFAULT = Path("~/.cache/audioembed/corpus/debian")
ESC50_URL = "https://github.com/karolpiczak/ESC-50"
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


class DatasetError(AudioembedError, ValueError):
    """A dataset that cannot be loaded; the message says what is wrong and how to fix it."""


@dataclass
class LabeledDataset:
    """Segments with labels; ``folds`` (official splits) and ``groups`` are optional."""

    name: str
    paths: list[str]
    labels: list[tuple[str, ...]]
    folds: list[str] | None = None
    groups: list[str] | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.paths)
        if n == 0:
            raise DatasetError(f"{self.name}: no segments")
        for what, values in (("labels", self.labels), ("folds", self.folds), ("groups", self.groups)):
            if values is not None and len(values) != n:
                raise DatasetError(f"{self.name}: {len(values)} {what} for {n} paths")
        empty = [p for p, lab in zip(self.paths, self.labels) if not lab]
        if empty:
            raise DatasetError(f"{self.name}: {len(empty)} segments have no label, e.g. {empty[0]}")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def classes(self) -> list[str]:
        return sorted({lab for labs in self.labels for lab in labs})

    @property
    def multi_label(self) -> bool:
        return any(len(labs) > 1 for labs in self.labels)

    def label_matrix(self) -> np.ndarray:
        """``(n_segments, n_classes)`` bool, columns in :attr:`classes` order."""
        index = {c: i for i, c in enumerate(self.classes)}
        rows = np.repeat(np.arange(len(self)), [len(labs) for labs in self.labels])
        cols = np.fromiter((index[lab] for labs in self.labels for lab in labs), dtype=np.int64)
        y = np.zeros((len(self), len(index)), dtype=bool)
        y[rows, cols] = True
        return y

    def subset(self, keep: np.ndarray) -> "LabeledDataset":
        """The segments where ``keep`` (bool, one per segment) is true."""
        idx = np.flatnonzero(keep)
        pick = (lambda xs: None if xs is None else [xs[i] for i in idx])
        return LabeledDataset(self.name, pick(self.paths), pick(self.labels), pick(self.folds),
                              pick(self.groups), self.source, list(self.notes), list(self.skipped))

    def fingerprint(self) -> str:
        """sha256 over paths, sizes, mtimes and labels: a changed file changes the cache key."""
        h = hashlib.sha256()
        for path, labs in zip(self.paths, self.labels):
            try:
                st = os.stat(path)
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            h.update(f"{path}\t{stamp}\t{';'.join(labs)}\n".encode())
        return h.hexdigest()

    def summary(self) -> dict:
        return {
            "name": self.name, "source": self.source, "n_segments": len(self),
            "n_classes": len(self.classes), "multi_label": self.multi_label,
            "official_folds": self.folds is not None, "grouped": self.groups is not None,
            "notes": self.notes, "skipped": len(self.skipped),
        }


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def _split_labels(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s.strip() for s in text.split(";") if s.strip()))


def _check_present(name: str, paths: list[str]) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DatasetError(f"{name}: {len(missing)} of {len(paths)} audio files are missing, e.g. "
                           + ", ".join(missing[:3]))


def load_manifest(csv_path: str | os.PathLike, data_root: str | os.PathLike | None = None,
                  name: str | None = None) -> LabeledDataset:
    """A ``path,labels[,fold][,group]`` CSV; relative paths resolve against ``data_root``
    (default: the CSV's folder). ``label`` is accepted for ``labels``."""
    csv_path = Path(csv_path)
    root = Path(data_root) if data_root else csv_path.parent
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        label_col = "labels" if "labels" in cols else "label" if "label" in cols else None
        if "path" not in cols or label_col is None:
            raise DatasetError(f"{csv_path}: a manifest needs a header with columns path,labels"
                               f"[,fold][,group]; found {cols}")
        reader.fieldnames = cols
        rows = list(reader)
    if not rows:
        raise DatasetError(f"{csv_path}: no rows")
    paths = [str(root / r["path"].strip()) for r in rows]
    labels = [_split_labels(r[label_col] or "") for r in rows]
    bad = [i + 2 for i, lab in enumerate(labels) if not lab]
    if bad:
        raise DatasetError(f"{csv_path}: rows without labels on lines {bad[:5]}")

    def column(key: str) -> list[str] | None:
        if key not in cols:
            return None
        values = [(r[key] or "").strip() for r in rows]
        if not all(values):
            raise DatasetError(f"{csv_path}: column {key!r} is empty on some rows; fill it on every "
                               "row or drop the column")
        return values

    _check_present(str(csv_path), paths)
    return LabeledDataset(name or csv_path.stem, paths, labels, column("fold"), column("group"),
                          source=str(csv_path))


def fsdd_root(data_root: str | os.PathLike | None = None) -> Path:
    """``--data-root``, else ``$AUDIOEMBED_FSDD``, else ``<repo>/../shared/data/fsdd/recordings``."""
    return Path(data_root or os.environ.get(FSDD_ENV) or FSDD_DEFAULT)


def load_fsdd(data_root: str | os.PathLike | None = None, label: str = "digit") -> LabeledDataset:
    """FSDD (``digit_speaker_index.wav``): label = digit, group = speaker; or label = speaker."""
    root = fsdd_root(data_root)
    found = sorted(os.listdir(root)) if root.is_dir() else []
    matches = [(m, n) for n in found if (m := _FSDD_NAME.match(n))]
    if not matches:
        raise DatasetError(
            f"fsdd: no FSDD recordings (digit_speaker_index.wav) in {root}. Get them with "
            f"`git clone {FSDD_URL}` and pass --data-root <clone>/recordings or set {FSDD_ENV}.")
    paths = [str(root / n) for _, n in matches]
    digits = [m.group(1) for m, _ in matches]
    speakers = [m.group(2) for m, _ in matches]
    if label == "digit":
        return LabeledDataset("fsdd", paths, [(d,) for d in digits], groups=speakers, source=str(root),
                              notes=["group = speaker: no speaker is in both training and test"])
    if label == "speaker":
        return LabeledDataset("fsdd-speaker", paths, [(s,) for s in speakers], source=str(root),
                              notes=["label = speaker; files are split independently"])
    raise ValueError(f"label must be 'digit' or 'speaker', got {label!r}")


def debian_labels_csv() -> Path:
    for candidate in (DEBIAN_LABELS, DEBIAN_LABELS_FALLBACK):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"debian-sfx: no label file at {DEBIAN_LABELS} (nor {DEBIAN_LABELS_FALLBACK})")


def load_debian_sfx(data_root: str | os.PathLike | None = None) -> LabeledDataset:
    """The labeled Debian clips (``package,path,label,duration_s``), audio at ROOT/package/path.

    Group = package: a package often ships near-duplicates (the same effect at several
    pitches or lengths), and a fold split that put one in training and another in test would
    measure memorisation, not semantics. Clips the corpus build left out are skipped.
    """
    labels_csv = debian_labels_csv()
    root = Path(data_root or DEBIAN_CORPUS_DEFAULT).expanduser()
    if not root.is_dir():
        raise DatasetError(f"debian-sfx: no built corpus at {root}. Build it with "
                           "`python -m training corpus debian` (or pass --data-root CORPUS_DIR).")
    with open(labels_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    paths = [str(root / r["package"] / r["path"]) for r in rows]
    present = np.fromiter((os.path.isfile(p) for p in paths), dtype=bool, count=len(paths))
    if not present.any():
        raise DatasetError(f"debian-sfx: none of the {len(paths)} labeled clips of {labels_csv} is "
                           f"under {root}. Build the corpus with `python -m training corpus debian`.")
    ds = LabeledDataset("debian-sfx", paths, [(r["label"].strip(),) for r in rows],
                        groups=[r["package"] for r in rows], source=f"{labels_csv} over {root}",
                        notes=["group = Debian package, so a package's near-duplicate clips never "
                               "straddle training and test"])
    if not present.all():
        _warn(f"debian-sfx: {int((~present).sum())} labeled clips are not in the corpus; skipped")
    kept = ds.subset(present)
    kept.skipped = [p for p, ok in zip(paths, present) if not ok]
    return kept


def debian_split(split_csv: str | os.PathLike = DEBIAN_SPLIT) -> dict[str, str]:
    """Package -> part (``eval`` or ``topline-train``) from the committed split file."""
    try:
        with open(split_csv, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    except OSError as exc:
        raise DatasetError(f"debian-sfx parts: cannot read the split {split_csv} ({exc})") from exc
    split = {r["package"]: r["part"] for r in rows}
    bad = sorted(set(split.values()) - set(DEBIAN_PARTS))
    if bad:
        raise DatasetError(f"{split_csv}: unknown parts {bad}; expected {list(DEBIAN_PARTS)}")
    return split


def load_debian_sfx_part(part: str, data_root: str | os.PathLike | None = None) -> LabeledDataset:
    """One package-disjoint part of debian-sfx (see :func:`debian_split`), named
    ``debian-sfx-<part>``. Packages missing from the split file belong to neither part."""
    if part not in DEBIAN_PARTS:
        raise DatasetError(f"debian-sfx: unknown part {part!r}; expected one of {list(DEBIAN_PARTS)}")
    full = load_debian_sfx(data_root)
    split = debian_split()
    keep = np.array([split.get(g) == part for g in full.groups])
    ds = full.subset(keep)
    ds.name = f"debian-sfx-{part}"
    ds.source = f"{full.source}, part {part!r} of {DEBIAN_SPLIT.name}"
    ds.notes = ds.notes + [f"the {part} part of the package-disjoint paper-tables split"]
    return ds


def load_esc50(root: str | os.PathLike) -> LabeledDataset:
    """ESC-50 (``meta/esc50.csv`` + ``audio/``) with its five official folds."""
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise DatasetError(f"esc50: no {meta}. Get ESC-50 from {ESC50_URL} (git clone or the zip) "
                           "and pass its folder as --dataset or --data-root.")
    with open(meta, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    paths = [str(root / "audio" / r["filename"]) for r in rows]
    _check_present("esc50", paths)
    # Clips cut from one source recording share src_file; the official folds keep them
    # together already, the group only matters if someone re-splits.
    return LabeledDataset("esc50", paths, [(r["category"],) for r in rows],
                          folds=[r["fold"] for r in rows], groups=[r["src_file"] for r in rows],
                          source=str(root), notes=["official ESC-50 folds"])


def is_audioset_csv(path: str | os.PathLike) -> bool:
    """True for an AudioSet segments CSV (``# YTID, start_seconds, ...`` header)."""
    with open(path, encoding="utf-8") as f:
        head = [f.readline() for _ in range(3)]
    return any(line.lstrip("# ").startswith("YTID") for line in head)


def _audio_index(folder: Path) -> dict[str, str]:
    """File stem -> path for the audio files under ``folder`` (recursive)."""
    index = {}
    for path in audio_files(folder):
        index.setdefault(path.stem, str(path))
    return index


def _audioset_stems(ytid: str, start: str) -> list[str]:
    seconds = float(start)
    return [f"{ytid}_{int(seconds)}", f"{ytid}_{start}", f"{ytid}_{seconds:.3f}",
            f"{ytid}_{int(round(seconds * 1000))}", ytid]


def load_audioset(csv_path: str | os.PathLike, data_root: str | os.PathLike | None = None
                  ) -> LabeledDataset:
    """An AudioSet segments CSV over local audio (default: the CSV's folder, searched recursively).

    A segment's audio is the first file found named ``YTID_START`` (start in whole seconds, as
    in the CSV, in seconds with 3 decimals, or in milliseconds) or ``YTID``, with extension .wav,
    .flac or .ogg. Segments without audio (videos gone from YouTube) are skipped and counted.
    Labels are the MIDs; a ``class_labels_indices.csv`` beside the CSV maps them to names.
    """
    csv_path = Path(csv_path)
    root = Path(data_root) if data_root else csv_path.parent
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f, skipinitialspace=True) if r and not r[0].startswith("#")]
    names = {}
    mapping = csv_path.parent / "class_labels_indices.csv"
    if mapping.is_file():
        with open(mapping, newline="", encoding="utf-8") as f:
            names = {r["mid"]: r["display_name"] for r in csv.DictReader(f)}
    index = _audio_index(root)
    paths, labels, videos, skipped = [], [], [], []
    for r in rows:
        ytid, start, labs = r[0], r[1], r[3]
        path = next((index[s] for s in _audioset_stems(ytid, start) if s in index), None)
        if path is None:
            skipped.append(f"{ytid}_{start}")
            continue
        paths.append(path)
        videos.append(ytid)
        labels.append(tuple(dict.fromkeys(names.get(m.strip(), m.strip()) for m in labs.split(","))))
    if not paths:
        raise DatasetError(f"{csv_path}: none of its {len(rows)} segments has audio under {root} "
                           "(expected files named YTID_START.wav, see --help); download the "
                           "segments (e.g. with yt-dlp) or pass --data-root")
    if skipped:
        _warn(f"{csv_path.name}: {len(skipped)} of {len(rows)} segments have no local audio; skipped")
    # Segments of one video overlap in content; AudioSet eval CSVs hold one segment per video,
    # but user-made lists may not.
    ds = LabeledDataset(csv_path.stem, paths, labels, groups=videos,
                        source=f"{csv_path} over {root}", notes=["group = YouTube video"])
    ds.skipped = skipped
    return ds


def load_dataset(spec: str, data_root: str | os.PathLike | None = None) -> LabeledDataset:
    """Resolve ``--dataset`` (see the module docstring) to a :class:`LabeledDataset`."""
    if spec == "fsdd":
        return load_fsdd(data_root, "digit")
    if spec == "fsdd-speaker":
        return load_fsdd(data_root, "speaker")
    if spec == "debian-sfx":
        return load_debian_sfx(data_root)
    if spec.startswith("debian-sfx-") and spec[len("debian-sfx-"):] in DEBIAN_PARTS:
        return load_debian_sfx_part(spec[len("debian-sfx-"):], data_root)
    if spec == "esc50":
        if not data_root:
            raise DatasetError(f"esc50: pass the ESC-50 folder as --data-root (get it from {ESC50_URL})")
        return load_esc50(data_root)
    path = Path(spec)
    if path.is_dir():
        if (path / "meta" / "esc50.csv").is_file():
            return load_esc50(path)
        raise DatasetError(f"{spec}: a folder, but not in the ESC-50 layout (meta/esc50.csv + audio/)")
    if path.is_file():
        if is_audioset_csv(path):
            return load_audioset(path, data_root)
        return load_manifest(path, data_root)
    raise DatasetError(f"unknown dataset {spec!r}: expected fsdd, fsdd-speaker, debian-sfx, "
                       "debian-sfx-eval, debian-sfx-topline-train, esc50, "
                       "an ESC-50 folder, an AudioSet segments CSV or a manifest CSV "
                       "(path,labels[,fold][,group])")
