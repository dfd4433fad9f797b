"""Keep freed memory in the process for reuse, instead of handing it back to the kernel.

torch's CPU tensors come from the C library's ``malloc``. glibc serves a large request (above
128 KiB at first) with a fresh ``mmap`` and returns it with ``munmap`` when the tensor dies,
and it trims the top of its heap once more than twice that is free. A ResNet-50 forward pass
allocates and frees tens of MB of activations, and the frontend a few MB per block, so every
pass faults the same pages in again (``benchmarks/bench_scale.py --malloc system`` counts the
page faults per window). Raising both thresholds lets freed blocks be reused as they are.

The setting is process-wide, so the library never applies it on its own: the ``audioembed``
and ``python -m training`` commands call :func:`keep_freed_memory` at start, and a program
that embeds with :func:`audioembed.embed` may call it too. It changes no result, only where
memory comes from; the process holds up to ``TRIM_THRESHOLD`` of freed memory instead of
returning it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

MMAP_THRESHOLD = 64 * 2 ** 20  # requests below this come from the heap, freed blocks are reused
TRIM_THRESHOLD = 256 * 2 ** 20  # free memory the heap keeps at its top before trimming

# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# Settings a user may have made for glibc's malloc; where any is set, theirs stand.
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
# AUDIOEMBED_MALLOC=system leaves glibc's own (dynamic) thresholds in place.
OPT_OUT_VARIABLE = "AUDIOEMBED_MALLOC"

_applied: str | None = None


def keep_freed_memory() -> str | None:
    """Raise glibc's mmap and trim thresholds for this process; a line saying what was set.

    ``None``, changing nothing, where the C library is not glibc (macOS, Windows, musl), where
    ``AUDIOEMBED_MALLOC=system`` is set, or where the user configured glibc's malloc through its
    own environment variables (``MALLOC_*_``, or a ``glibc.malloc`` tunable in
    ``GLIBC_TUNABLES``). Calling it again returns the same line.
    """
    global _applied
    if _applied is not None:
        return _applied
    if (os.environ.get(OPT_OUT_VARIABLE) == "system" or any(name in os.environ for name in _USER_SETTINGS)
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")):
        return None
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return None
    # mallopt returns 1 on success, 0 on a value it rejects.
    if not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return None
    _applied = (f"glibc malloc: mmap threshold {MMAP_THRESHOLD >> 20} MiB, "
                f"trim threshold {TRIM_THRESHOLD >> 20} MiB")
    return _applied


def _glibc_mallopt():
    """glibc's ``mallopt``, or ``None`` under another C library."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # glibc alone has gnu_get_libc_version; musl has a mallopt that ignores these parameters.
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return None
    mallopt = libc.mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt
