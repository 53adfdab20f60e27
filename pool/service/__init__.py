"""`guestpool serve`: the scan queue, the scheduler and an HTTP API in one process.

Owns: ``_serve`` (the process: bind checks, task group, shutdown), ``_queue``
(persisted scan requests), ``_reads`` (the handlers' reads of the store, on a
worker thread and a connection of their own), ``_scheduler`` (runs them as rounds), ``_metrics``
(Prometheus), ``_app`` (routes and auth: every HTTP route is there),
``_status_page``, ``_console`` and ``_charts`` (HTML views), ``_openapi``,
``_supply`` (SBOM and vulnerability endpoints) with ``_osv_state`` (the OSV
index it keeps), ``_responses`` (one shape for error answers), ``_nats_hosts`` (scans across
NATS hosts, with ``serve --nats``).

May import: ``rounds``, ``nats`` and everything below them. Never ``cli``.
"""

from ._app import build_app, validate_scan_request
from ._scheduler import Service
from ._serve import check_bind, serve

__all__ = ["Service", "build_app", "check_bind", "serve", "validate_scan_request"]
