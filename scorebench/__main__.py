"""`python -m scorebench` is the same command line as `scorebench`."""

from scorebench.cli import run

run()
