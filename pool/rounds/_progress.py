"""What a scan shows while it runs: a live panel on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.text import Text

from guestpool.store._results import InspectResult

from ._pool import Pool


class ScanProgress:
    """Feeds on the pool's events and results; renders done/total, rate, time left in
    the budget, appliances booting/busy/idle and errors."""

    def __init__(self, console: Console, total: int, budget: float, quiet: bool = False
                 ) -> None:
        self.console, self.total, self.budget = console, total, budget
        self.pool: Pool | None = None
        self.quiet = quiet
        self.done = Counter[str]()
        self.errors: list[str] = []
        self.start = time.monotonic()
        self.live = console.is_terminal and not quiet

    def on_result(self, r: InspectResult) -> None:
        self.done["ok" if r.ok else "failed"] += 1
        if not r.ok and r.error:
            self.errors.append(f"{r.vm}: {r.error['kind']}: {r.error['message'][:100]}")
        if self.quiet or self.live:
            return
        status = {"inspected": "ok", "unchanged": "unchanged"}.get(
            r.state, f"FAILED ({r.error['kind'] if r.error else '?'})")
        self.console.print(f"[{self.done.total()}/{self.total}] {r.vm}: {status}"
                           f"{job_detail(r)}", highlight=False)

    def on_event(self, name: str, data: dict[str, Any]) -> None:
        if self.quiet or self.live or name not in ("boot_done", "retire", "boot_failed"):
            return
        detail = (f"in {data['seconds']:.1f} s" if "seconds" in data else
                  str(data.get("reason") or data.get("error", "")))
        self.console.print(f"  appliance {data.get('appliance')}: {name.replace('_', ' ')} "
                           f"{detail}", highlight=False)

    def __rich__(self) -> RenderableType:
        elapsed = time.monotonic() - self.start
        n = self.done.total()
        rate = n / elapsed if elapsed > 0 else 0.0
        states = self.pool.counts() if self.pool is not None else Counter[str]()
        head = Text.assemble(
            (f"{n}/{self.total} VMs", "bold"), f"  {rate * 60:.1f} VMs/min  ",
            (f"{max(0.0, self.budget - elapsed):.0f} s left", "cyan"), " of the budget  ",
            f"appliances: {states.get('booting', 0) + states.get('starting', 0)} booting, "
            f"{states.get('busy', 0)} busy, {states.get('idle', 0)} idle  ",
            (f"{self.done['failed']} errors", "red" if self.done["failed"] else "green"))
        bar = ProgressBar(total=max(1, self.total), completed=n, width=60)
        lines: list[RenderableType] = [head, bar]
        lines += [Text(e, style="red") for e in self.errors[-3:]]
        return Group(*lines)

    def running(self) -> Live | _NoLive:
        return Live(self, console=self.console, refresh_per_second=4) if self.live \
            else _NoLive()


class _NoLive:
    def __enter__(self) -> _NoLive:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def job_detail(r: InspectResult) -> str:
    """", job 0.71 s, waited 38.4 s": the VM's own job apart from waiting for an
    appliance (a VM verified unchanged ran no job)."""
    if r.state == "unchanged" or "job" not in r.timings:
        return ""
    wait = r.timings.get("wait", 0.0)
    return f", job {r.timings['job']:.2f} s" + (f", waited {wait:.1f} s" if wait >= 0.05 else "")
