"""Readers for the archive formats some Debian packages hide their audio in.

Three kinds occur in the corpus manifests (see the recipe's README in
``training/recipes/debian``):

* zip (0ad ``public.zip``, warzone2100 ``.wz``, ufoai/nexuiz ``.pk3``),
* Qt binary resources (gcompris-qt ``<activity>.rcc``),
* OpenTTD sound catalogues (``opensfx.cat``).

Every reader takes ``{member: destination}`` and extracts exactly those members,
writing each destination atomically; it returns the members it could not find.
"""
from __future__ import annotations

import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Iterator, Mapping

from audioembed.errors import AudioembedError
from audioembed.outputs import atomic_create, atomic_write

ZIP, RCC, CAT = "zip", "rcc", "cat"
_COPY_CHUNK = 1 << 20


class ContainerError(AudioembedError):
    """A container is malformed or uses a feature this module does not read."""


# What a reader may raise on a damaged or unsupported container.
READ_ERRORS = (ContainerError, zipfile.BadZipFile, zlib.error, struct.error, UnicodeDecodeError, OSError)


def write_bytes_atomic(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` via a temporary file and a rename."""
    atomic_write(dest, lambda f: f.write(data))


def write_stream_atomic(dest: Path, src) -> None:
    """Copy the binary file object ``src`` to ``dest`` via a temporary file and a rename."""
    atomic_write(dest, lambda f: shutil.copyfileobj(src, f, _COPY_CHUNK))


def copy_file_atomic(src: Path, dest: Path) -> None:
    """Place a copy of ``src`` at ``dest`` atomically, hard-linking when possible.

    A hard link costs no I/O, and the data survives the later deletion of the
    staging tree ``src`` lives in.
    """
    try:
        atomic_create(dest, lambda tmp: os.link(src, tmp))
    except OSError:
        # Different filesystem or links not supported: fall back to copying.
        with open(src, "rb") as f:
            write_stream_atomic(dest, f)


def detect_kind(path: Path) -> str | None:
    """Return ``"zip"``, ``"rcc"`` or ``"cat"`` from the file's magic bytes and name."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"qres":
        return RCC
    if zipfile.is_zipfile(path):
        return ZIP
    if path.suffix.lower() == ".cat":
        return CAT
    return None


def extract_members(kind: str, archive: Path, members: Mapping[str, Path]) -> set[str]:
    """Extract ``members`` (member name -> destination) from ``archive`` of ``kind``.

    Returns the member names that are not in the archive.
    """
    readers = {ZIP: zip_extract, RCC: rcc_extract, CAT: cat_extract}
    if kind not in readers:
        raise ContainerError(f"unknown container kind {kind!r}")
    return readers[kind](archive, members)


def zip_extract(archive: Path, members: Mapping[str, Path]) -> set[str]:
    """Stream the listed members out of a zip archive (never the whole archive)."""
    missing = set()
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        for member, dest in members.items():
            if member not in names:
                missing.add(member)
                continue
            with zf.open(member) as src:
                write_stream_atomic(dest, src)
    return missing


_RCC_COMPRESSED_ZLIB = 0x01
_RCC_DIRECTORY = 0x02
_RCC_COMPRESSED_ZSTD = 0x04


def rcc_index(blob: bytes) -> dict[str, tuple[int, int]]:
    """Map each file path in a Qt resource blob to ``(flags, data_offset)``.

    Paths have no leading slash (``gcompris/src/...``). Format: a 'qres' header
    (version, tree, data and names offsets), a tree of fixed-size nodes (14 bytes
    in version 1, 22 from version 2 on, which appended a modification time),
    names as length-prefixed UTF-16BE preceded by a 4-byte hash.
    """
    if blob[:4] != b"qres" or len(blob) < 20:
        raise ContainerError("not a Qt resource file (no 'qres' header)")
    version, tree, data, names = struct.unpack(">IIII", blob[4:20])
    node_size = 22 if version >= 2 else 14

    def name_at(offset: int) -> str:
        (n,) = struct.unpack(">H", blob[names + offset : names + offset + 2])
        start = names + offset + 6
        return blob[start : start + 2 * n].decode("utf-16-be")

    out: dict[str, tuple[int, int]] = {}
    # Iterative walk: a malformed file must not blow the recursion limit.
    stack: list[tuple[int, str, int]] = [(0, "", 0)]
    while stack:
        index, prefix, depth = stack.pop()
        if depth > 64:
            raise ContainerError("resource tree deeper than 64 levels")
        o = tree + index * node_size
        if o + 14 > len(blob):
            raise ContainerError(f"tree node {index} lies outside the file")
        name_offset, flags = struct.unpack(">IH", blob[o : o + 6])
        name = name_at(name_offset) if index else ""
        path = f"{prefix}/{name}" if prefix else name
        if flags & _RCC_DIRECTORY:
            count, first = struct.unpack(">II", blob[o + 6 : o + 14])
            stack.extend((first + i, path, depth + 1) for i in range(count))
        else:
            (data_offset,) = struct.unpack(">I", blob[o + 10 : o + 14])
            out[path] = (flags, data + data_offset)
    return out


def rcc_read(blob: bytes, flags: int, offset: int) -> bytes:
    """Return the (decompressed) payload of one resource at absolute ``offset``."""
    (size,) = struct.unpack(">I", blob[offset : offset + 4])
    raw = blob[offset + 4 : offset + 4 + size]
    if flags & _RCC_COMPRESSED_ZLIB:
        # qCompress format: 4-byte big-endian uncompressed length, then a zlib stream.
        return zlib.decompress(raw[4:])
    if flags & _RCC_COMPRESSED_ZSTD:
        try:
            import zstandard
        except ImportError as exc:
            raise ContainerError("zstd-compressed .rcc member needs the 'zstandard' package") from exc
        return zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 30)
    return raw


def rcc_extract(archive: Path, members: Mapping[str, Path]) -> set[str]:
    """Extract the listed members of a Qt ``.rcc`` file (member names without leading '/')."""
    blob = Path(archive).read_bytes()
    index = rcc_index(blob)
    missing = set()
    for member, dest in members.items():
        entry = index.get(member.lstrip("/"))
        if entry is None:
            missing.add(member)
            continue
        write_bytes_atomic(dest, rcc_read(blob, *entry))
    return missing


def cat_member_name(index: int, title: str) -> str:
    """The file name the corpus manifests use for item ``index`` titled ``title``.

    Mirrors ``tools/opensfx_cat.py``: ``NN_`` + the title with every character
    other than alphanumerics and ``._-`` replaced by ``_``, cut to 90 characters,
    with ``.wav`` appended when missing.
    """
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in title)[:90]
    name = f"{index:02d}_{safe}"
    return name if name.lower().endswith(".wav") else name + ".wav"


def cat_items(blob: bytes) -> Iterator[tuple[str, bytes]]:
    """Yield ``(member_name, riff_bytes)`` for each RIFF item of an OpenTTD ``.cat``.

    Format: a table of little-endian ``(offset, size)`` pairs whose first offset
    also gives the table length (the high bit of offsets is a flag, masked off);
    each item is a length-prefixed Latin-1 title followed by a RIFF/WAVE file.
    Non-RIFF items are skipped, as the reference extractor does.
    """
    if len(blob) < 8:
        raise ContainerError("file too short for a .cat table")
    (first,) = struct.unpack("<I", blob[:4])
    count = (first & 0x7FFFFFFF) // 8
    if count * 8 > len(blob):
        raise ContainerError("item table runs past the end of the file")
    for i in range(count):
        offset, size = struct.unpack("<II", blob[8 * i : 8 * i + 8])
        offset &= 0x7FFFFFFF
        item = blob[offset : offset + size]
        if not item:
            continue
        n = item[0]
        title = item[1 : 1 + n].rstrip(b"\0").decode("latin-1")
        riff = item[1 + n :]
        if riff[:4] == b"RIFF":
            yield cat_member_name(i, title), riff


def cat_extract(archive: Path, members: Mapping[str, Path]) -> set[str]:
    """Extract the listed items of an OpenTTD ``.cat`` (names as :func:`cat_member_name`)."""
    wanted = dict(members)
    for name, riff in cat_items(Path(archive).read_bytes()):
        dest = wanted.pop(name, None)
        if dest is not None:
            write_bytes_atomic(dest, riff)
    return set(wanted)
