"""`python -m relman`."""

from relman.cli import main

main()
