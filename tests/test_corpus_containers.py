"""Container readers and the Debian corpus placement logic, without network or .debs."""
from __future__ import annotations

import io
import json
import os
import struct
import wave
import zipfile
import zlib
from pathlib import Path

import pytest

from training.corpus import containers
from training.corpus import debian


def _wav_bytes(n_frames: int = 800, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{n_frames}h", *[(i * 37) % 2000 - 1000 for i in range(n_frames)]))
    return buf.getvalue()


# --------------------------------------------------------------------------- format writers
def make_rcc(files: dict[str, tuple[bytes, bool]], version: int = 3) -> bytes:
    """A Qt resource blob holding ``files`` (path -> (payload, zlib-compress?)).

    Layout per Qt's rcc: header, names (u16 length, u32 hash, UTF-16BE), data
    (u32 size + payload; compressed payloads are u32 plain size + zlib), and a
    tree of fixed-size nodes where each directory's children are contiguous.
    """
    tree: dict = {}
    for path, content in files.items():
        node = tree
        *dirs, leaf = path.split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = content

    names, data = bytearray(), bytearray()
    name_offsets: dict[str, int] = {}

    def name_offset(name: str) -> int:
        if name not in name_offsets:
            name_offsets[name] = len(names)
            names.extend(struct.pack(">HI", len(name), 0) + name.encode("utf-16-be"))
        return name_offsets[name]

    # Breadth-first numbering so every directory's children get consecutive indices.
    nodes: list[tuple[str, object]] = [("", tree)]
    records: list[bytes] = []
    pad = b"\0" * 8 if version >= 2 else b""
    i = 0
    while i < len(nodes):
        name, value = nodes[i]
        noff = name_offset(name) if i else 0
        if isinstance(value, dict):
            first = len(nodes)
            nodes.extend(sorted(value.items()))
            records.append(struct.pack(">IHII", noff, 2, len(value), first) + pad)
        else:
            payload, compress = value
            stored = struct.pack(">I", len(payload)) + zlib.compress(payload) if compress else payload
            records.append(struct.pack(">IHHHI", noff, 1 if compress else 0, 0, 0, len(data)) + pad)
            data.extend(struct.pack(">I", len(stored)) + stored)
        i += 1

    header_len = 24 if version >= 3 else 20
    names_off = header_len
    data_off = names_off + len(names)
    tree_off = data_off + len(data)
    header = b"qres" + struct.pack(">IIII", version, tree_off, data_off, names_off)
    if version >= 3:
        header += struct.pack(">I", 0)
    return header + bytes(names) + bytes(data) + b"".join(records)


def make_cat(items: list[tuple[str, bytes]]) -> bytes:
    """An OpenTTD .cat: (offset, size) table, then length-prefixed NUL-ended titles + data."""
    table_len = 8 * len(items)
    table, body = bytearray(), bytearray()
    for title, payload in items:
        raw_title = title.encode("latin-1") + b"\0"
        item = bytes([len(raw_title)]) + raw_title + payload
        table.extend(struct.pack("<II", table_len + len(body), len(item)))
        body.extend(item)
    return bytes(table) + bytes(body)


# --------------------------------------------------------------------------- readers
def test_zip_extracts_only_listed_members(tmp_path):
    archive = tmp_path / "base.wz"  # zip whatever the extension
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("audio/a.ogg", b"AAA")
        zf.writestr("audio/b.ogg", b"BBB")
        zf.writestr("other/c.txt", b"CCC")
    assert containers.detect_kind(archive) == containers.ZIP
    out = tmp_path / "out"
    missing = containers.zip_extract(archive, {"audio/b.ogg": out / "b.ogg", "audio/nope.ogg": out / "n.ogg"})
    assert missing == {"audio/nope.ogg"}
    assert sorted(p.name for p in out.iterdir()) == ["b.ogg"]
    assert (out / "b.ogg").read_bytes() == b"BBB"


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_index_and_extract(tmp_path, version):
    files = {
        "gcompris/src/activities/x/resource/plain.wav": (b"RIFFplain", False),
        "gcompris/src/activities/x/resource/packed.ogg": (b"OggS" + b"z" * 500, True),
        "gcompris/src/activities/x/x.qml": (b"qml", False),
        "top.txt": (b"top", True),
    }
    blob = make_rcc(files, version)
    archive = tmp_path / "x.rcc"
    archive.write_bytes(blob)
    assert containers.detect_kind(archive) == containers.RCC
    index = containers.rcc_index(blob)
    assert set(index) == set(files)
    for path, (payload, _) in files.items():
        assert containers.rcc_read(blob, *index[path]) == payload

    out = tmp_path / "out"
    wanted = {
        "gcompris/src/activities/x/resource/packed.ogg": out / "packed.ogg",
        "/gcompris/src/activities/x/resource/plain.wav": out / "plain.wav",  # leading '/' tolerated
        "gcompris/missing.wav": out / "missing.wav",
    }
    assert containers.rcc_extract(archive, wanted) == {"gcompris/missing.wav"}
    assert sorted(p.name for p in out.iterdir()) == ["packed.ogg", "plain.wav"]
    assert (out / "packed.ogg").read_bytes() == files["gcompris/src/activities/x/resource/packed.ogg"][0]


def test_rcc_rejects_non_rcc():
    with pytest.raises(containers.ContainerError):
        containers.rcc_index(b"PK\x03\x04" + b"\0" * 40)


def test_cat_items_names_and_extract(tmp_path):
    wav = _wav_bytes()
    blob = make_cat([
        ("Propeller plane (Original: x.wav by y)", wav),
        ("not a sound", b"junkjunk"),
        ("Horn.wav", wav[:-2] + b"\1\2"),
    ])
    names = [name for name, _ in containers.cat_items(blob)]
    assert names == ["00_Propeller_plane__Original__x.wav_by_y_.wav", "02_Horn.wav"]
    assert containers.cat_member_name(7, "a" * 200) == "07_" + "a" * 90 + ".wav"

    archive = tmp_path / "opensfx.cat"
    archive.write_bytes(blob)
    assert containers.detect_kind(archive) == containers.CAT
    out = tmp_path / "out"
    missing = containers.cat_extract(archive, {"02_Horn.wav": out / "h.wav", "05_Gone.wav": out / "g.wav"})
    assert missing == {"05_Gone.wav"}
    assert [p.name for p in out.iterdir()] == ["h.wav"]
    assert (out / "h.wav").read_bytes() == wav[:-2] + b"\1\2"


def test_atomic_writes_leave_no_temp_files(tmp_path):
    dest = tmp_path / "d" / "f.bin"
    containers.write_bytes_atomic(dest, b"one")
    containers.write_bytes_atomic(dest, b"two")
    src = tmp_path / "src.bin"
    src.write_bytes(b"three")
    containers.copy_file_atomic(src, tmp_path / "d" / "g.bin")
    assert dest.read_bytes() == b"two"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.bin", "g.bin"]
    assert dest.stat().st_mode & 0o644 == 0o644  # readable like any new file, not mkstemp's 0600


# --------------------------------------------------------------------------- manifest resolution
def test_split_container_path():
    assert debian.split_container_path("usr/share/a.ogg") == (None, "usr/share/a.ogg")
    assert debian.split_container_path("_unpacked/public.zip/audio/x.ogg") == ("public.zip", "audio/x.ogg")
    with pytest.raises(debian.CorpusError):
        debian.split_container_path("_unpacked/public.zip")


def test_locate_follows_symlinks_inside_root(tmp_path):
    root = tmp_path / "pkg"
    (root / "usr/share/real").mkdir(parents=True)
    (root / "usr/share/real/a.wav").write_bytes(b"a")
    (root / "usr/share/game").mkdir(parents=True)
    os.symlink("/usr/share/real", root / "usr/share/game/sounds")  # absolute: relative to root
    os.symlink("../real/a.wav", root / "usr/share/game/b.wav")
    os.symlink("/../../../etc/hostname", root / "usr/share/game/escape")
    assert debian.locate(root, "usr/share/game/sounds/a.wav") == root / "usr/share/real/a.wav"
    assert debian.locate(root, "usr/share/game/b.wav") == root / "usr/share/real/a.wav"
    assert debian.locate(root, "usr/share/game/escape") is None
    assert debian.locate(root, "usr/share/real") is None  # a directory is not a file


def _write_fake_package(staging: Path) -> None:
    (staging / "usr/share/fake/sounds").mkdir(parents=True)
    (staging / "usr/share/fake/sounds/bird.wav").write_bytes(_wav_bytes())
    (staging / "usr/share/fake/sounds/other.wav").write_bytes(b"not listed")
    with zipfile.ZipFile(staging / "usr/share/fake/data.pk3", "w") as zf:
        zf.writestr("music/song.wav", _wav_bytes(1600))
        zf.writestr("music/unlisted.wav", b"x")
    rcc = make_rcc({"gcompris/res/moo.wav": (_wav_bytes(), True)})
    (staging / "usr/share/fake/rcc").mkdir()
    (staging / "usr/share/fake/rcc/farm.rcc").write_bytes(rcc)


PATHS = [
    "usr/share/fake/sounds/bird.wav",
    "_unpacked/data.pk3/music/song.wav",
    "_unpacked/farm/gcompris/res/moo.wav",
    "usr/share/fake/sounds/absent.wav",
    "_unpacked/nowhere.zip/a.wav",
]


def test_build_package_places_files_and_is_idempotent(tmp_path):
    out = tmp_path / "corpus"
    pin = debian.Pin("fake-data", "1.0-1")
    calls = []

    def fake_fetch(pin, out, staging, keep_debs, log):
        calls.append(pin.name)
        staging.mkdir(parents=True)
        _write_fake_package(staging)
        return {"deb_bytes": 1}

    quiet = lambda message: None  # noqa: E731
    res = debian.build_package(pin, PATHS, out, fetch=fake_fetch, log=quiet)
    assert res["status"] == "built"
    assert res["missing"] == {
        "usr/share/fake/sounds/absent.wav": "not in package",
        "_unpacked/nowhere.zip/a.wav": "container nowhere.zip not found",
    }
    assert res["containers"] == {"zip": 1, "rcc": 1}
    kept = sorted(str(p.relative_to(out / "fake-data")) for p in (out / "fake-data").rglob("*") if p.is_file())
    assert kept == sorted(PATHS[:3])
    assert not (out / ".staging" / "fake-data").exists()
    marker = json.loads(debian.marker_path(out, "fake-data").read_text())
    assert marker["version"] == "1.0-1" and len(marker["missing"]) == 2

    # Done: a rerun fetches nothing.
    assert debian.build_package(pin, PATHS, out, fetch=fake_fetch, log=quiet)["status"] == "skipped"
    assert calls == ["fake-data"]

    # A kept file lost since: the package is rebuilt, and only that file is written.
    (out / "fake-data" / PATHS[1]).unlink()
    res = debian.build_package(pin, PATHS, out, fetch=fake_fetch, log=quiet)
    assert res["status"] == "built" and calls == ["fake-data"] * 2
    assert (out / "fake-data" / PATHS[1]).is_file()

    # A new pinned version invalidates the marker.
    assert not debian.is_done(out, debian.Pin("fake-data", "2.0-1"), PATHS)


def test_failed_fetch_leaves_no_marker(tmp_path):
    def broken_fetch(pin, out, staging, keep_debs, log):
        raise debian.CorpusError("apt-get download failed")

    pin = debian.Pin("fake-data", "1.0-1")
    res = debian.build_package(pin, PATHS, tmp_path, fetch=broken_fetch, log=lambda m: None)
    assert res["status"] == "failed" and "apt-get download failed" in res["error"]
    assert not debian.marker_path(tmp_path, "fake-data").exists()


def test_summary_counts_missing_and_undecodable(tmp_path):
    out = tmp_path / "corpus"
    (out / "p").mkdir(parents=True)
    (out / "p/good.wav").write_bytes(_wav_bytes(8000))
    (out / "p/bad.wav").write_bytes(b"RIFF????WAVEjunk")
    entries = [
        debian.Entry("p", "good.wav", "unlabeled", 1.0),
        debian.Entry("p", "bad.wav", "labeled", 2.0, "dog"),
        debian.Entry("p", "gone.wav", "unlabeled", 3.0),
    ]
    verified = debian.verify_files([out / "p/good.wav", out / "p/bad.wav"], jobs=1)
    assert verified[str(out / "p/good.wav")][0] is None
    assert verified[str(out / "p/bad.wav")][0]
    report = debian.summarise(out, [debian.Pin("p", "1")], entries, {"p": {"status": "built"}}, verified)
    row = report["packages"]["p"]
    assert (row["listed"], row["found"], row["missing"], row["undecodable"]) == (3, 2, 1, 1)
    assert [m["path"] for m in report["missing"]] == ["gone.wav"]
    assert report["totals"]["unlabeled"]["hours_found"] == round(1 / 3600, 3)
    assert "p " in debian.format_summary(report)


def _write_recipe(recipe: Path, manifests: dict[str, list[tuple[str, str, float]]]) -> None:
    recipe.mkdir()
    (recipe / "packages.txt").write_text("old-data=1\nnew-data=2\n")
    (recipe / "deb_versions.csv").write_text("old-data,1,10\nnew-data,2,20\n")
    (recipe / "labeled.csv").write_text("package,path,label,duration_s\r\nold-data,eval/dog.wav,dog,0.1\r\n")
    for name, rows in manifests.items():
        text = "package,path,duration_s\r\n" + "".join(f"{p},{path},{d}\r\n" for p, path, d in rows)
        (recipe / name).write_text(text, newline="")


def test_builder_fetches_the_packages_a_newer_training_manifest_adds(tmp_path):
    """unlabeled.csv plus unlabeled_v31.csv: old rows once, new packages' rows, no github rows."""
    old_rows = [("old-data", "usr/share/fake/sounds/bird.wav", 0.1)]
    new_rows = [("new-data", "usr/share/fake/sounds/bird.wav", 0.1), ("new-data", "usr/share/fake/sounds/absent.wav", 1.0)]
    recipe = tmp_path / "recipe"
    _write_recipe(recipe, {"unlabeled.csv": old_rows,
                           "unlabeled_v31.csv": [("github", "birds/call.ogg", 2.0), *new_rows, *old_rows]})
    entries = debian.load_entries(recipe)
    assert [(e.package, e.path, e.split) for e in entries] == \
        [(p, path, "unlabeled") for p, path, _ in old_rows + new_rows] + [("old-data", "eval/dog.wav", "labeled")]

    out = tmp_path / "corpus"
    pins = debian.load_pins(recipe)
    assert [(p.name, p.deb_size) for p in pins] == [("old-data", 10), ("new-data", 20)]

    def fake_fetch(pin, out, staging, keep_debs, log):
        staging.mkdir(parents=True)
        _write_fake_package(staging)
        return {"deb_bytes": 1}

    paths = [e.path for e in entries if e.package == "new-data"]
    res = debian.build_package(pins[1], paths, out, fetch=fake_fetch, log=lambda m: None)
    assert res["status"] == "built" and res["missing"] == {"usr/share/fake/sounds/absent.wav": "not in package"}
    verified = debian.verify_files([out / "new-data" / paths[0]], jobs=1)
    report = debian.summarise(out, pins[1:], entries, {"new-data": res}, verified)
    row = report["packages"]["new-data"]
    assert (row["listed"], row["found"], row["missing"], row["undecodable"]) == (2, 1, 1, 0)
    assert report["missing"] == [{"package": "new-data", "path": "usr/share/fake/sounds/absent.wav",
                                  "split": "unlabeled", "reason": "not in package"}]
    assert report["duration_mismatch"] == []

    # Without the newer manifest the builder sees only the old rows, as before.
    (recipe / "unlabeled_v31.csv").unlink()
    assert {e.package for e in debian.load_entries(recipe)} == {"old-data"}


V31_PACKAGES = {"festvox-ru": (620, 1.659), "asterisk-prompt-it-menardi-wav": (554, 0.413)}


def test_pinned_v31_manifest_is_v3_plus_the_new_packages():
    import csv

    read = lambda name: list(csv.reader(open(debian.RECIPE_DIR / name, newline="")))  # noqa: E731
    v31, v3 = read("unlabeled_v31.csv"), read("unlabeled_v3.csv")
    assert [r for r in v31 if r[0] not in V31_PACKAGES] == v3
    assert v31[1:] == sorted(v31[1:], key=lambda r: (r[0], r[1]))
    raw = (debian.RECIPE_DIR / "unlabeled_v31.csv").read_bytes()
    assert raw.count(b"\r\n") == len(v31) == 25803 and raw.count(b"\n") == len(v31)
    for name, (files, hours) in V31_PACKAGES.items():
        rows = [r for r in v31 if r[0] == name]
        assert len(rows) == files and round(sum(float(r[2]) for r in rows) / 3600, 3) == hours
    pinned = {p.name for p in debian.load_pins()}
    assert set(V31_PACKAGES) <= pinned
    assert {r[0] for r in v31[1:]} <= pinned | {"github"}  # every Debian row is fetched by the builder
    assert not [r for r in v31[1:] if r[0] in V31_PACKAGES and "/music/" in f"/{r[1]}"]


def test_recipe_manifests_are_consistent():
    pins = debian.load_pins()
    entries = debian.load_entries()
    assert len(pins) == 85
    assert {e.package for e in entries} <= {p.name for p in pins}
    assert sum(e.split == "labeled" for e in entries) == 1293
    assert all(p.deb_size > 0 for p in pins)
    licensed = {line.split("|", 1)[0] for line in (debian.RECIPE_DIR / "licenses.txt").read_text().splitlines()}
    assert {p.name for p in pins} <= licensed
    unlabeled = [(e.package, e.path) for e in entries if e.split == "unlabeled"]
    assert len(unlabeled) == 23742 + 620 + 554 == len(set(unlabeled))
    # no evaluation clip is trained on, nor a directory sibling of a sound-event clip (speech and
    # music directories, such as a voice's prompt folder, stay in training)
    assert not set(unlabeled) & {(e.package, e.path) for e in entries if e.split == "labeled"}
    eval_dirs = {(e.package, e.path.rsplit("/", 1)[0]) for e in entries
                 if e.split == "labeled" and e.label not in ("speech", "music")}
    assert not [u for u in unlabeled if (u[0], u[1].rsplit("/", 1)[0]) in eval_dirs]
    assert all(e.duration_s >= 0.2 for e in entries if e.split == "unlabeled")
