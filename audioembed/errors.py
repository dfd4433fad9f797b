"""The base of every error audioembed raises on user input or model files.

Each error also keeps its builtin base (``ValueError``, ``RuntimeError``), so code that caught
those before still does; ``except AudioembedError`` catches exactly the errors that are the
caller's to fix, and leaves a bug in audioembed a traceback.
"""
from __future__ import annotations


class AudioembedError(Exception):
    """An input, option, model or file that audioembed cannot use; the message says why."""


class AudioError(AudioembedError, ValueError):
    """An input that cannot be embedded; the message is one line naming the input."""


class InvalidArgumentError(AudioembedError, ValueError):
    """An argument or option outside what audioembed accepts (a hop, a batch size, a shard)."""


class MissingDependencyError(AudioembedError, ImportError):
    """An optional package a feature needs is not installed; the message says how to add it."""


class UsageError(AudioembedError, ValueError):
    """The command line asks for something impossible (an output that cannot be written, an
    option out of range); nothing has been written. The CLI exits 2."""
