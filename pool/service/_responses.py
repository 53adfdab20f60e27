"""Error answers of the service, one shape for every route: ``{"error": message}``."""

from __future__ import annotations

from starlette.responses import JSONResponse


def problem(status: int, message: str, headers: dict[str, str] | None = None
            ) -> JSONResponse:
    """A JSON error answer the client can show as it is: ``message`` says what to do."""
    return JSONResponse({"error": message}, status, headers)
