"""``python -m guestpool``: the command line."""

from guestpool.cli._main import main

main()
