"""The service's OpenAPI document (served at /openapi.json, checked by schemathesis)."""

from __future__ import annotations

from typing import Any

from ._queue import MAX_BUDGET, STATES


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
                        "vms": {"type": "array", "items": {"type": "string", "minLength": 1}},
                        "inspectors": {"type": "array",
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
            "summary": "Known VMs, by name, one page at a time",
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
            "get": {"summary": "Latest results of a VM",
                    "responses": {**_ok({"type": "object"}), "404": _ERR, **_AUTH}}},
        "/vms/{name}/drift": {
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "get": {"summary": "A VM's drift", "responses": {
                **_ok({"type": "array", "items": {"type": "object"}}), "404": _ERR, **_AUTH}}},
        "/pool": {"get": {"summary": "Appliances and their states",
                          "responses": {**_ok({"type": "object"}), **_AUTH}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
            "200": {"description": "text exposition format"}, **_AUTH}}},
        "/healthz": {"get": {"summary": "Liveness", "security": [],
                             "responses": _ok({"type": "object"})}},
    },
}
