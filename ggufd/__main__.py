"""Entry point for ``python -m ggufd``: hands the command line to :func:`ggufd.cli.main`."""

from ggufd.cli import main

main()
