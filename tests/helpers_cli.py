"""The one way tests run a click command in-process: ``cli("extract", path, "-o", out)``."""
from __future__ import annotations

from click.testing import CliRunner, Result


def cli(*args, command=None, env: dict | None = None, catch_exceptions: bool = False) -> Result:
    """Invoke ``command`` (default: the ``audioembed`` command group, ``audioembed.cli.main``;
    pass ``training.cli.main`` or one of its commands for ``python -m training``) with the
    arguments converted by ``str()``, and return click's result (``exit_code``, ``stdout``,
    ``stderr``, ``output``).

    An exception the command does not handle propagates (``catch_exceptions=False``), so a bug
    fails the test with its traceback instead of passing for exit code 1. ``env`` sets
    environment variables for the invocation.
    """
    if command is None:
        from audioembed.cli import main as command
    return CliRunner(env=env).invoke(command, [str(a) for a in args], catch_exceptions=catch_exceptions)
