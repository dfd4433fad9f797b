"""``python -m audioembed``: the ``audioembed`` command."""
from audioembed.cli import main

main(prog_name="audioembed")
