"""Build the Debian audio corpus: download pinned packages, keep only the manifest files.

The recipe (``training/recipes/debian``, described in its README.md) pins the Debian 12
packages and lists the audio files to keep (``unlabeled.csv`` and the newer pinned training
manifests of :data:`UNLABELED_MANIFESTS` for training, ``labeled.csv`` for evaluation). For
each package we ``apt-get download`` the pinned ``.deb``,
``dpkg-deb -x`` it into a staging directory, copy out exactly the listed files
to ``OUT/<package>/<path>`` and delete the staging tree and the ``.deb``, so the
disk only ever holds the kept audio plus one or two packages in flight.

A manifest ``path`` starting with ``_unpacked/<name>/`` names a member of a
container found in the package (see :mod:`training.corpus.containers`).

The build is resumable: files are written atomically and a package gets a
done-marker (``OUT/.done/<package>``) once all of its files are in place.
"""
from __future__ import annotations

import csv
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Mapping

from audioembed.errors import AudioembedError
from training.corpus import containers

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes" / "debian"
DEFAULT_OUT = "~/.cache/audioembed/corpus/debian"
UNPACKED = "_unpacked"
SPLITS = ("unlabeled", "labeled")
# The training manifests whose rows the builder fetches, oldest first. A newer manifest keeps the
# rows of the older ones and adds packages; rows of sources that are not pinned Debian packages
# (the ``github`` rows, copied by their own builder) are left out.
UNLABELED_MANIFESTS = ("unlabeled.csv", "unlabeled_v31.csv")
# The container kinds this builder reads (the report lists them).
SUPPORTED_CONTAINERS = (containers.ZIP, containers.RCC, containers.CAT)
_VERIFY_FRAMES = 4096
_VERIFY_CHUNK = 256


class CorpusError(AudioembedError):
    """A problem with one package (download, extraction) or with the build itself."""


@dataclass(frozen=True)
class Pin:
    """One pinned package: ``name=version`` and the expected ``.deb`` size in bytes."""

    name: str
    version: str
    deb_size: int = 0


@dataclass(frozen=True)
class Entry:
    """One manifest row: a file of ``package`` at ``path``, in ``split``."""

    package: str
    path: str
    split: str
    duration_s: float
    label: str = ""


def load_pins(recipe_dir: Path = RECIPE_DIR) -> list[Pin]:
    """Read ``packages.txt`` (``name=version`` lines) and the sizes in ``deb_versions.csv``."""
    sizes = {}
    with open(recipe_dir / "deb_versions.csv", newline="") as f:
        for row in csv.reader(f):
            if len(row) == 3 and row[2].isdigit():
                sizes[row[0]] = int(row[2])
    pins = []
    for line in (recipe_dir / "packages.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("=")
        if not sep:
            raise CorpusError(f"packages.txt: expected name=version, got {line!r}")
        pins.append(Pin(name, version, sizes.get(name, 0)))
    return pins


def load_entries(recipe_dir: Path = RECIPE_DIR) -> list[Entry]:
    """Read the training manifests and ``labeled.csv`` into :class:`Entry` rows.

    The unlabeled split is the union of the :data:`UNLABELED_MANIFESTS` present in
    ``recipe_dir`` (first occurrence of a ``(package, path)`` wins). Where ``recipe_dir`` has
    a ``packages.txt``, rows of packages it does not pin are dropped.
    """
    pinned = {p.name for p in load_pins(recipe_dir)} if (recipe_dir / "packages.txt").is_file() else None
    files = {"unlabeled": [n for n in UNLABELED_MANIFESTS if (recipe_dir / n).is_file()],
             "labeled": ["labeled.csv"]}
    entries, seen = [], set()
    for split in SPLITS:
        for name in files[split]:
            with open(recipe_dir / name, newline="") as f:
                for row in csv.DictReader(f):
                    key = (split, row["package"], row["path"])
                    if key in seen or (pinned is not None and row["package"] not in pinned):
                        continue
                    seen.add(key)
                    entries.append(Entry(row["package"], row["path"], split, float(row["duration_s"]),
                                         row.get("label", "")))
    return entries


def split_container_path(path: str) -> tuple[str | None, str]:
    """Split ``_unpacked/<container>/<member>`` into ``(container, member)``.

    Plain paths come back as ``(None, path)``.
    """
    parts = path.split("/", 2)
    if parts[0] == UNPACKED:
        if len(parts) < 3 or not parts[1] or not parts[2]:
            raise CorpusError(f"malformed container path {path!r}")
        return parts[1], parts[2]
    return None, path


def locate(root: Path, relpath: str, max_links: int = 40) -> Path | None:
    """Resolve ``relpath`` inside an extracted package tree ``root``.

    Symlinks are followed as the installed system would see them: absolute
    targets are taken relative to ``root`` (packages link to ``/usr/share/...``),
    and ``..`` never climbs above ``root``. Returns the regular file, or None.
    """
    pending = [p for p in PurePosixPath(relpath).parts if p not in ("", "/", ".")]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            links += 1
            if links > max_links:
                return None
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = [p for p in PurePosixPath(target).parts if p not in ("", "/", ".")] + pending
            continue
        resolved.append(part)
    found = root.joinpath(*resolved)
    return found if found.is_file() else None


def _container_candidates(root: Path, name: str) -> list[tuple[str, Path]]:
    """Files in ``root`` that can hold ``_unpacked/<name>/...`` members, best first."""
    by_name: dict[str, list[Path]] = defaultdict(list)
    wanted = (name, f"{name}.rcc", f"{name}.cat")
    for dirpath, _dirs, files in os.walk(root):
        for fname in files:
            if fname in wanted:
                by_name[fname].append(Path(dirpath) / fname)
    out = []
    for fname in wanted:
        for path in sorted(by_name[fname]):
            kind = containers.detect_kind(path)
            if kind is not None:
                out.append((kind, path))
    return out


@dataclass
class Placement:
    """What :func:`place_files` did: counts, per-path failures, and reader errors."""

    placed: int = 0
    already: int = 0
    missing: dict[str, str] = field(default_factory=dict)  # path -> why the package lacks it
    errors: dict[str, str] = field(default_factory=dict)  # path -> reader error (worth a retry)
    containers: Counter = field(default_factory=Counter)  # kind -> members extracted


def place_files(staging: Path, dest_root: Path, paths: Iterable[str]) -> Placement:
    """Copy the manifest ``paths`` from an extracted package into ``dest_root``.

    ``dest_root / path`` receives each file (container members included, so a
    manifest row always resolves to ``OUT/<package>/<path>``). Files already
    present are kept: they were written atomically by an earlier run.
    """
    result = Placement()
    by_container: dict[str, dict[str, Path]] = defaultdict(dict)
    for path in sorted(set(paths)):
        dest = dest_root / path
        if dest.is_file():
            result.already += 1
            continue
        container, member = split_container_path(path)
        if container is not None:
            by_container[container][member] = dest
            continue
        src = locate(staging, path)
        if src is None:
            result.missing[path] = "not in package"
            continue
        containers.copy_file_atomic(src, dest)
        result.placed += 1

    for container, members in by_container.items():
        _place_members(staging, container, members, result)
    return result


def _place_members(staging: Path, container: str, members: dict[str, Path], result: Placement) -> None:
    prefix = f"{UNPACKED}/{container}/"
    remaining = dict(members)
    candidates = _container_candidates(staging, container)
    for kind, archive in candidates:
        try:
            absent = containers.extract_members(kind, archive, remaining)
        except containers.READ_ERRORS as exc:
            # Recorded as errors, not as missing files, so the package gets no
            # done-marker and a rerun (say, after installing a decompressor) retries it.
            for member in remaining:
                result.errors[prefix + member] = f"{kind} reader: {type(exc).__name__}: {exc}"
            return
        result.containers[kind] += len(remaining) - len(absent)
        result.placed += len(remaining) - len(absent)
        remaining = {m: remaining[m] for m in absent}
        if not remaining:
            return
    reason = f"not in container {container}" if candidates else f"container {container} not found"
    for member in remaining:
        result.missing[prefix + member] = reason


def marker_path(out: Path, package: str) -> Path:
    """Where the done-marker of ``package`` lives."""
    return out / ".done" / package


def is_done(out: Path, pin: Pin, paths: Iterable[str]) -> bool:
    """True if ``pin`` was fully built and every file it then found is still on disk."""
    marker = marker_path(out, pin.name)
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False  # unreadable marker: rebuilding is the safe answer
    if info.get("version") != pin.version:
        return False
    absent = set(info.get("missing", []))
    return all((out / pin.name / p).is_file() for p in paths if p not in absent)


def write_marker(out: Path, pin: Pin, placement: Placement) -> None:
    """Record that ``pin`` is built; paths the package genuinely lacks are listed."""
    info = {"version": pin.version, "missing": sorted(placement.missing), "time": time.time()}
    containers.write_bytes_atomic(marker_path(out, pin.name), json.dumps(info, indent=1).encode())


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def ensure_apt_lists(pins: list[Pin], log: Callable[[str], None] = print) -> None:
    """Run ``apt-get update`` once if apt does not know every pinned version."""
    if not pins:
        return
    probe = _run(["apt-cache", "show", "--no-all-versions"] + [f"{p.name}={p.version}" for p in pins])
    if probe.returncode == 0:
        return
    log(f"apt does not know all pinned versions ({_tail(probe.stdout, 2)}); running apt-get update")
    update = _run(["apt-get", "update"])
    if update.returncode != 0:
        log(f"apt-get update failed: {_tail(update.stdout)}")


def download_deb(pin: Pin, deb_dir: Path) -> Path:
    """``apt-get download name=version`` into ``deb_dir``; reuse a .deb already there."""
    deb_dir.mkdir(parents=True, exist_ok=True)
    existing = sorted(deb_dir.glob(f"{pin.name}_*.deb"))
    if existing:
        return existing[0]
    # apt writes into the working directory; a private one means a killed
    # download never leaves a truncated .deb where a rerun would reuse it.
    part = deb_dir / ".part"
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir()
    proc = _run(["apt-get", "download", f"{pin.name}={pin.version}"], cwd=part)
    debs = sorted(part.glob("*.deb"))
    if proc.returncode != 0 or len(debs) != 1:
        shutil.rmtree(part, ignore_errors=True)
        raise CorpusError(f"apt-get download {pin.name}={pin.version} failed: {_tail(proc.stdout)}")
    deb = deb_dir / debs[0].name
    os.replace(debs[0], deb)
    part.rmdir()
    return deb


def extract_deb(deb: Path, staging: Path) -> None:
    """``dpkg-deb -x`` the package into a fresh ``staging`` directory."""
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    proc = _run(["dpkg-deb", "-x", str(deb), str(staging)])
    if proc.returncode != 0:
        raise CorpusError(f"dpkg-deb -x {deb.name} failed: {_tail(proc.stdout)}")


def apt_fetch(pin: Pin, out: Path, staging: Path, keep_debs: bool, log: Callable[[str], None]) -> dict:
    """Download and extract ``pin`` into ``staging``; return download statistics."""
    deb_dir = out / ".debs" / pin.name
    had_deb = any(deb_dir.glob(f"{pin.name}_*.deb"))
    t0 = time.monotonic()
    deb = download_deb(pin, deb_dir)
    seconds = time.monotonic() - t0
    size = deb.stat().st_size
    if not had_deb:
        log(f"{pin.name}: downloaded {size / 1e6:.1f} MB in {seconds:.1f} s")
    try:
        extract_deb(deb, staging)
    except CorpusError:
        if not had_deb:
            raise
        # A .deb kept from an earlier run may be damaged: fetch it once more.
        deb.unlink()
        deb = download_deb(pin, deb_dir)
        extract_deb(deb, staging)
    finally:
        if not keep_debs:
            shutil.rmtree(deb_dir, ignore_errors=True)
    return {"deb_bytes": size, "download_s": None if had_deb else round(seconds, 2)}


def build_package(
    pin: Pin,
    paths: list[str],
    out: Path,
    keep_debs: bool = False,
    fetch: Callable[..., dict] = apt_fetch,
    log: Callable[[str], None] = print,
) -> dict:
    """Build one package into ``out``; never raises for package-level failures.

    ``fetch(pin, out, staging, keep_debs, log)`` fills ``staging`` with the
    package tree (tests pass a fake). Returns a result dict with ``status`` one of
    ``skipped`` (already done), ``built`` or ``failed``.
    """
    result = {"package": pin.name, "version": pin.version, "status": "failed", "error": None,
              "placed": 0, "missing": {}, "errors": {}, "containers": {}}
    if is_done(out, pin, paths):
        result["status"] = "skipped"
        return result
    t0 = time.monotonic()
    staging = out / ".staging" / pin.name
    try:
        result.update(fetch(pin, out, staging, keep_debs, log))
        placement = place_files(staging, out / pin.name, paths)
    except (CorpusError, OSError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"{pin.name}: FAILED {result['error']}")
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.update(placed=placement.placed + placement.already, missing=placement.missing,
                  errors=placement.errors, containers=dict(placement.containers),
                  seconds=round(time.monotonic() - t0, 1))
    if placement.errors:
        # Reader errors may be fixable (a missing decompressor): leave no marker
        # so the next run tries again.
        result["error"] = f"{len(placement.errors)} container members could not be read"
        return result
    write_marker(out, pin, placement)
    result["status"] = "built"
    return result


def _log_flush(message: str) -> None:
    print(message, flush=True)


def _build_package_job(pin: Pin, paths: list[str], out: Path, keep_debs: bool) -> dict:
    # Top-level so a process pool can pickle it; flushes so logs interleave sanely.
    return build_package(pin, paths, out, keep_debs, log=_log_flush)


def verify_file(path: Path) -> tuple[str | None, float | None]:
    """Check that ``path`` decodes with soundfile: ``(error or None, duration_s)``.

    Reads the header and a few thousand frames, enough to catch files that
    libsndfile cannot open (unknown formats, corrupt headers) without decoding
    the whole corpus.
    """
    import soundfile as sf

    try:
        info = sf.info(str(path))
        with sf.SoundFile(str(path)) as f:
            block = f.read(frames=_VERIFY_FRAMES, dtype="float32")
    except Exception as exc:  # any decoder failure is a finding to report, not a crash
        return f"{type(exc).__name__}: {exc}".strip(), None
    if len(block) == 0:
        return "no audio frames decoded", info.duration
    return None, info.duration


def _verify_chunk(paths: list[str]) -> list[tuple[str, str | None, float | None]]:
    return [(p, *verify_file(Path(p))) for p in paths]


def verify_files(paths: list[Path], jobs: int) -> dict[str, tuple[str | None, float | None]]:
    """Verify ``paths`` with ``jobs`` processes; map each path to ``(error, duration_s)``."""
    chunks = [[str(p) for p in paths[i : i + _VERIFY_CHUNK]] for i in range(0, len(paths), _VERIFY_CHUNK)]
    results: dict[str, tuple[str | None, float | None]] = {}
    if jobs <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            results.update((p, (e, d)) for p, e, d in _verify_chunk(chunk))
        return results
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for done in pool.map(_verify_chunk, chunks):
            results.update((p, (e, d)) for p, e, d in done)
    return results


def summarise(out: Path, pins: list[Pin], entries: list[Entry], results: Mapping[str, dict],
              verified: Mapping[str, tuple[str | None, float | None]] | None) -> dict:
    """Build the report from what is on disk now (so it is right after a resume too)."""
    packages = {}
    missing, undecodable, duration_off = [], [], []
    totals = {s: {"files_listed": 0, "files_found": 0, "hours_listed": 0.0, "hours_found": 0.0} for s in SPLITS}
    by_package: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        by_package[e.package].append(e)
    for pin in pins:
        res = results.get(pin.name, {})
        row = {"version": pin.version, "status": res.get("status", "not run"), "error": res.get("error"),
               "listed": 0, "found": 0, "missing": 0, "undecodable": 0, "containers": res.get("containers", {})}
        for e in by_package[pin.name]:
            dest = out / pin.name / e.path
            t = totals[e.split]
            row["listed"] += 1
            t["files_listed"] += 1
            t["hours_listed"] += e.duration_s / 3600
            if not dest.is_file():
                why = res.get("missing", {}).get(e.path) or res.get("errors", {}).get(e.path) \
                    or res.get("error") or "not built"
                missing.append({"package": pin.name, "path": e.path, "split": e.split, "reason": why})
                row["missing"] += 1
                continue
            row["found"] += 1
            t["files_found"] += 1
            t["hours_found"] += e.duration_s / 3600
            if verified is None or str(dest) not in verified:
                continue
            error, duration = verified[str(dest)]
            if error:
                undecodable.append({"package": pin.name, "path": e.path, "error": error})
                row["undecodable"] += 1
            elif duration is not None and abs(duration - e.duration_s) > max(0.5, 0.02 * e.duration_s):
                duration_off.append({"package": pin.name, "path": e.path,
                                     "manifest_s": e.duration_s, "decoded_s": round(duration, 3)})
        packages[pin.name] = row
    for t in totals.values():
        t["hours_listed"] = round(t["hours_listed"], 3)
        t["hours_found"] = round(t["hours_found"], 3)
    return {
        "out": str(out),
        "packages": packages,
        "totals": totals,
        "verified": verified is not None,
        "container_kinds_read": list(SUPPORTED_CONTAINERS),
        "missing": missing,
        "undecodable": undecodable,
        "duration_mismatch": duration_off,
    }


def format_summary(report: dict) -> str:
    """A human-readable table of the report."""
    lines = [f"{'package':34} {'status':8} {'found':>6} {'listed':>6} {'missing':>7} {'undec':>5}"]
    for name, row in report["packages"].items():
        lines.append(f"{name:34} {row['status']:8} {row['found']:6d} {row['listed']:6d} "
                     f"{row['missing']:7d} {row['undecodable']:5d}"
                     + (f"  {row['error']}" if row["error"] else ""))
    for split, t in report["totals"].items():
        lines.append(f"{split}: {t['files_found']}/{t['files_listed']} files, "
                     f"{t['hours_found']:.2f}/{t['hours_listed']:.2f} h")
    lines.append(f"containers read: {', '.join(report['container_kinds_read'])}")
    verify = f"{len(report['undecodable'])} undecodable" if report["verified"] else "not verified"
    lines.append(f"missing: {len(report['missing'])} files; {verify}; "
                 f"{len(report['duration_mismatch'])} with a duration unlike the manifest")
    for item in report["undecodable"][:20]:
        lines.append(f"  undecodable {item['package']}/{item['path']}: {item['error']}")
    lines.append(f"report: {report['out']}/report.json")
    return "\n".join(lines)


def select_pins(pins: list[Pin], names: Iterable[str] | None) -> list[Pin]:
    """Restrict ``pins`` to ``names`` (all when None); unknown names are an error."""
    if names is None:
        return pins
    names = list(dict.fromkeys(names))
    known = {p.name for p in pins}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CorpusError(f"not pinned in the recipe: {', '.join(unknown)}")
    return [p for p in pins if p.name in names]


class _BuildLock:
    """An exclusive lock on ``OUT/.lock`` so two builds never write one tree."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".lock"
        self.handle = None

    def __enter__(self) -> "_BuildLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self.handle.close()
            raise CorpusError(f"another build holds {self.path}") from exc
        return self

    def __exit__(self, *exc_info) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def build(out: Path, packages: Iterable[str] | None = None, jobs: int = 2, keep_debs: bool = False,
          verify: bool = True, recipe_dir: Path = RECIPE_DIR, log: Callable[[str], None] = _log_flush) -> dict:
    """Build (or resume) the corpus in ``out``; write and return ``out/report.json``."""
    out = Path(out).expanduser().resolve()
    pins = select_pins(load_pins(recipe_dir), packages)
    entries = [e for e in load_entries(recipe_dir) if e.package in {p.name for p in pins}]
    paths: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        paths[e.package].append(e.path)

    with _BuildLock(out):
        todo = [p for p in pins if not is_done(out, p, paths[p.name])]
        results = {p.name: {"status": "skipped"} for p in pins if p not in todo}
        log(f"{len(pins)} packages, {len(pins) - len(todo)} already done, "
            f"{sum(p.deb_size for p in todo) / 1e9:.2f} GB of .deb to fetch, {jobs} jobs, out={out}")
        ensure_apt_lists(todo, log)
        results.update(_build_all(todo, paths, out, keep_debs, jobs, log))
        shutil.rmtree(out / ".staging", ignore_errors=True)

        verified = None
        if verify:
            present = [out / e.package / e.path for e in entries if (out / e.package / e.path).is_file()]
            log(f"verifying {len(present)} files with soundfile ...")
            verified = verify_files(present, jobs)
        report = summarise(out, pins, entries, results, verified)
        containers.write_bytes_atomic(out / "report.json", json.dumps(report, indent=1).encode())
    return report


def _build_all(todo: list[Pin], paths: Mapping[str, list[str]], out: Path, keep_debs: bool, jobs: int,
               log: Callable[[str], None]) -> dict[str, dict]:
    results: dict[str, dict] = {}
    t0 = time.monotonic()
    fetched = 0
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_build_package_job, p, paths[p.name], out, keep_debs): p for p in todo}
        for k, fut in enumerate(as_completed(futures), 1):
            pin = futures[fut]
            try:
                res = fut.result()
            except Exception as exc:  # a crashed worker fails its package, not the build
                res = {"package": pin.name, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            results[pin.name] = res
            fetched += res.get("deb_bytes", 0)
            rate = fetched / 1e6 / max(time.monotonic() - t0, 1e-3)
            missing = f", {len(res['missing'])} missing" if res.get("missing") else ""
            error = f", {res['error']}" if res.get("error") else ""
            log(f"[{k}/{len(todo)}] {pin.name}: {res['status']}, {res.get('placed', 0)} files"
                f"{missing}{error} "
                f"({res.get('seconds', 0)} s; {rate:.1f} MB/s of .deb overall)")
    return results
