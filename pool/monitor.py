"""`guestpool monitor`: rounds back to back on an interval, drift per round."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console

from guestpool.inspectors.registry import parse_names

from .dispatch import run_round
from .sources import open_source, safety_policy
from .store import Store

console = Console(stderr=True)


def run_monitor(manifest: str, *, interval: float, rounds: int | None, budget: float,
                inspector_names: str | None, pool: int | None, strategy: str,
                accel: str | None, as_json: bool, store_path: Path | None, batch: int = 1,
                allow_format_mismatch: bool = False) -> int:
    names = parse_names(inspector_names)
    store = Store(store_path)
    source = open_source(manifest)
    safety = safety_policy(source, allow_format_mismatch)

    async def main() -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for sig in signals:
                        console.print(f"guestpool monitor: {signal.Signals(sig).name}: "
                                      "finishing in-flight jobs, then stopping")
                        stop.set()
                        return

            tg.start_soon(watch_signals)
            n = 0
            while not stop.is_set() and (rounds is None or n < rounds):
                n += 1
                started = time.monotonic()
                vms = source.load()  # re-read: the fleet changes between rounds
                report = await run_round(vms, budget=budget, inspectors=names, pool_size=pool,
                                         strategy=strategy,  # type: ignore[arg-type]
                                         accel=accel, store=store, stop=stop, batch=batch,
                                         safety=safety)
                _print_round(n, report, as_json)
                wait = interval - (time.monotonic() - started)
                if rounds is not None and n >= rounds:
                    break
                with anyio.move_on_after(max(0.0, wait)):
                    await stop.wait()
            tg.cancel_scope.cancel()

    anyio.run(main, backend="trio")
    store.close()
    return 0


def _print_round(n: int, report: Any, as_json: bool) -> None:
    import json
    from collections import Counter

    summary = report.summary()
    kinds = Counter(c["kind"] for c in report.drift)
    summary["drift_by_kind"] = dict(kinds)
    if as_json:
        print(json.dumps(summary), flush=True)
        return
    console.print(f"round {n}: covered {summary['covered']}, failed {summary['failed']}, "
                  f"not reached {summary['not_reached']} in {summary['elapsed_s']} s; drift: "
                  + (", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none"),
                  highlight=False)
