"""The OSV index the service keeps: built in a worker thread when the service
starts and rebuilt when the folder's files change (checked every
``RECHECK_S``); requests are served from the last good index meanwhile."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from starlette.responses import JSONResponse, Response

from guestpool._errors import GuestpoolError
from guestpool.supply import _findings
from guestpool.supply import _matching as _vulns
from guestpool.supply._osv import how_to_fill

from ._responses import problem as _problem

RECHECK_S = 30.0


@dataclass
class OsvState:
    """The service's OSV folder and its current index (None until read)."""

    folder: str | None = None
    index: _vulns.OsvIndex | None = None
    error: str | None = None

    async def keep_loaded(self, recheck: float = RECHECK_S) -> None:
        """Build the index now, then rebuild it whenever the folder changes."""
        if self.folder is None:
            return
        folder = self.folder
        while True:
            try:
                self.index = await anyio.to_thread.run_sync(_findings.index_for, folder)
                self.error = None
            except GuestpoolError as e:
                self.error = str(e)
            await anyio.sleep(recheck)

    def unavailable(self) -> Response | None:
        """503 saying what to do while there is no index to match with."""
        if self.folder is None:
            return _problem(503, "no OSV folder configured: start the service with --osv DIR; "
                                 + how_to_fill("DIR"))
        if self.index is None:
            if self.error is not None:
                return _problem(503, self.error)
            return JSONResponse({"error": f"reading OSV advisories in {self.folder}; "
                                          "try again shortly"}, 503, {"Retry-After": "10"})
        return None
