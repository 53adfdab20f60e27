"""The service's OpenAPI document (served at /openapi.json, checked by schemathesis)."""

from __future__ import annotations

from typing import Any

from ._queue import MAX_BUDGET, MAX_REQUEST_INSPECTORS, MAX_REQUEST_VMS, STATES


def _schema_scan() -> dict[str, Any]:
    return {"type": "object", "properties": {
        "id": {"type": "string"}, "state": {"type": "string", "enum": list(STATES)},
        "request": {"type": "object"}, "created": {"type": "number"},
        "started": {"type": ["number", "null"]}, "finished": {"type": ["number", "null"]},
        "progress": {"type": ["object", "null"]}, "summary": {"type": ["object", "null"]},
        "errors": {"type": ["array", "null"]}, "estimated_start_s": {"type": "number"}},
        "required": ["id", "state"]}


_ERR = {"description": "error", "content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}}}}}
_AUTH = {"401": {"description": "missing or wrong bearer token"},
         "421": {"description": "no token configured and the Host header does not name "
                                "this service's loopback address"}}


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_NO_OSV = {**_ERR, "description": "no OSV folder configured, or its advisories not read yet"}
_VM_FINDINGS = {"type": "object", "required": ["vm", "findings", "skipped"], "properties": {
    "vm": {"type": "string"}, "ecosystem": {"type": ["string", "null"]},
    "packages": {"type": "integer"}, "skipped": {"type": ["string", "null"]},
    "findings": {"type": "array", "items": {"type": "object", "properties": {
        "id": {"type": "string"}, "aliases": {"type": "array", "items": {"type": "string"}},
        "package": {"type": "string"}, "installed": {"type": "string"},
        "fixed": {"type": ["string", "null"]}, "severity": {"type": "string"}}}}}}


def _ok(schema: dict[str, Any], code: str = "200") -> dict[str, Any]:
    return {code: {"description": "ok", "content": {"application/json": {"schema": schema}}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "guestpool", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/scans": {
            "post": {
                "summary": "Queue a scan; answers 202 with its id once persisted",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "schema": {"type": "string", "maxLength": 200}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": False, "properties": {
                        "fleet": {"type": "string", "minLength": 1,
                                  "description": "a fleet this service was started with "
                                                 "(--fleet NAME=FLEET); never a path or URI"},
                        "vms": {"type": "array", "maxItems": MAX_REQUEST_VMS,
                                "items": {"type": "string", "minLength": 1}},
                        "inspectors": {"type": "array", "maxItems": MAX_REQUEST_INSPECTORS,
                                       "description": "registered inspector names only",
                                       "items": {"type": "string", "minLength": 1}},
                        "budget": {"type": "number", "minimum": 5, "maximum": MAX_BUDGET}}}}}},
                "responses": {**_ok(_schema_scan(), "202"), **_ok(_schema_scan()),
                              "413": _ERR, "415": _ERR, "422": _ERR, **_AUTH}},
            "get": {"summary": "Recent scans",
                    "responses": {**_ok({"type": "array", "items": _schema_scan()}), **_AUTH}}},
        "/scans/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "get": {"summary": "A scan's state, progress, coverage and errors",
                    "responses": {**_ok(_schema_scan()), "404": _ERR, **_AUTH}},
            "delete": {"summary": "Cancel a scan",
                       "responses": {**_ok(_schema_scan(), "202"), "404": _ERR, "409": _ERR,
                                     **_AUTH}}},
        "/vms": {"get": {
            "summary": "Known VMs by name, one page at a time: each VM's state (inspected, "
                       "unchanged, failed, never), OS, package count, when its facts were "
                       "inspected and last verified",
            "parameters": [
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
                {"name": "offset", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 0}}],
            "responses": {**_ok({"type": "array", "items": {"type": "object"}}), "422": _ERR,
                          **_AUTH}}},
        "/vms/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "get": {"summary": "A VM's latest result (for a VM verified unchanged, the "
                               "inspection it carries) and vm_state, its latest attempt's",
                    "responses": {**_ok({"type": "object"}), "404": _ERR, **_AUTH}}},
        "/vms/{name}/drift": {
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "get": {"summary": "A VM's drift", "responses": {
                **_ok({"type": "array", "items": {"type": "object"}}), "404": _ERR, **_AUTH}}},
        "/vms/{name}/sbom": {
            "parameters": [_NAME,
                           {"name": "format", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["cyclonedx", "spdx"]}},
                           {"name": "spec", "in": "query", "required": False,
                            "description": "CycloneDX specification version",
                            "schema": {"type": "string", "enum": ["1.5", "1.6"]}}],
            "get": {"summary": "SBOM of a VM's latest package list, the OS as root component",
                    "responses": {"200": {"description": "CycloneDX or SPDX 2.3 JSON", "content": {
                        "application/vnd.cyclonedx+json": {"schema": {"type": "object"}},
                        "application/spdx+json": {"schema": {"type": "object"}}}},
                        "404": _ERR, "409": _ERR, "422": _ERR, **_AUTH}}},
        "/vms/{name}/vulns": {
            "parameters": [_NAME],
            "get": {"summary": "Known vulnerabilities of a VM's latest package list (OSV, offline)",
                    "responses": {**_ok(_VM_FINDINGS), "404": _ERR, "409": _ERR,
                                  "503": _NO_OSV, **_AUTH}}},
        "/vulns": {"get": {
            "summary": "The fleet's vulnerabilities: counts by severity, advisories worst first, "
                       "findings per VM",
            "responses": {**_ok({"type": "object", "required": ["counts", "advisories", "vms"],
                                 "properties": {
                                     "osv": {"type": "object"},
                                     "counts": {"type": "object", "additionalProperties": {
                                         "type": "integer"}},
                                     "advisories": {"type": "array",
                                                    "items": {"type": "object"}},
                                     "vms": {"type": "array", "items": _VM_FINDINGS}}}),
                          "503": _NO_OSV, **_AUTH}}},
        "/pool": {"get": {"summary": "Appliances and their states",
                          "responses": {**_ok({"type": "object"}), **_AUTH}}},
        "/hosts": {"get": {"summary": "Hosts whose agents announced themselves (serve --nats)",
                           "responses": {**_ok({"type": "object"}), **_AUTH}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
            "200": {"description": "text exposition format"}, **_AUTH}}},
        "/fleet": {"get": {
            "summary": "The console's fleet table (HTML), or its rows with format=json",
            "parameters": [
                {"name": n, "in": "query", "required": False, "schema": schema}
                for n, schema in (
                    ("format", {"type": "string", "enum": ["html", "json"]}),
                    ("q", {"type": "string"}), ("distro", {"type": "string"}),
                    ("version", {"type": "string"}), ("state", {"type": "string"}),
                    ("stale", {"type": "string", "description": "an age: 90s, 30m, 1h, 2d"}),
                    ("sort", {"type": "string"}), ("desc", {"type": "string"}),
                    ("size", {"type": "integer"}), ("page", {"type": "integer"}))],
            "responses": {"200": {"description": "the page, or {total, vms} as JSON",
                                  "content": {"text/html": {"schema": {"type": "string"}},
                                              "application/json": {"schema": {
                                                  "type": "object"}}}},
                          "422": {"description": "a parameter out of range"}, **_AUTH}}},
        "/fleet/{name}": {
            "parameters": [_NAME],
            "get": {"summary": "The console's page of one VM (HTML)", "responses": {
                "200": {"description": "the page"}, "404": {"description": "unknown VM"},
                **_AUTH}}},
        "/healthz": {"get": {"summary": "Liveness", "security": [],
                             "responses": _ok({"type": "object"})}},
    },
}
