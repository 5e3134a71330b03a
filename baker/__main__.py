"""`python -m baker`: the same command line as `baker`."""

from baker.cli import main

main()
