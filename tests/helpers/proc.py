"""Reading a child's output with a deadline: a test must never hang on a pipe."""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Callable
from typing import IO


def wait_for_line(stream: IO[str], prefix: str | Callable[[str], bool], timeout: float) -> str:
    """The first line of ``stream`` that starts with ``prefix`` (or satisfies it);
    AssertionError with what was read if it does not come within ``timeout``
    seconds or the stream ends."""
    wanted = prefix if callable(prefix) else (lambda line: line.startswith(str(prefix)))
    fd = stream.fileno()
    os.set_blocking(fd, False)
    seen, buf = [], ""
    end = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while (left := end - time.monotonic()) > 0:
            if not sel.select(left):
                continue
            chunk = os.read(fd, 65536).decode(errors="replace")
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split("\n")
            for line in lines:
                seen.append(line)
                if wanted(line):
                    return line
    raise AssertionError(f"no line starting {prefix!r} within {timeout:.0f} s; read:\n"
                         + "\n".join(seen[-30:]))
