"""`python -m imagegate.cli`."""

from imagegate.cli import main

main()
