"""Inspectors used only by tests: slow, broken, and unserialisable ones."""

from __future__ import annotations

import time
from typing import Any

from guestpool.inspectors import Guest, Inspector


class Slow(Inspector):
    name = "test-slow"
    version = "1"
    deadline = 120.0

    def run(self, guest: Guest, options: Any) -> Any:
        time.sleep(8)
        return "slept"


class Boom(Inspector):
    name = "test-boom"
    version = "1"

    def run(self, guest: Guest, options: Any) -> Any:
        raise ValueError("boom")


class Unserialisable(Inspector):
    name = "test-unserialisable"
    version = "1"

    def run(self, guest: Guest, options: Any) -> Any:
        return {"x": object()}
