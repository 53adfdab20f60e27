"""``python -m guestpool``: the command line."""

from guestpool._cli import main

main()
