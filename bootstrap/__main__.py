"""Entry point for ``pulumi -C bootstrap up``; the program lives in :mod:`bootstrap.program`."""

from bootstrap.program import main

main()
