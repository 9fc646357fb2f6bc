"""Endpoints as data, and the OpenAPI 3 document built from them.

A route module returns ``Endpoint``s: the handler plus the types it reads and
answers (query parameters and body as pydantic models, answers as the models
of ``schemas.py``). ``openapi(endpoints)`` builds ``/openapi.json`` from
exactly those types, so the reference cannot drift from the code.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response

from .auth import Role
from .params import NoParams
from .schemas import Error

__all__ = ["Endpoint", "Handler", "docs_page", "openapi"]

Handler = Callable[[Request], Awaitable[Response]]

_ERRORS = {
    401: "no or unknown API key",
    403: "the key's role is too low",
    404: "not found",
    413: "body too large",
    422: "a bad parameter or body field (named in parameter)",
    429: "over the rate limit (see Retry-After)",
    503: "store unavailable or query_timeout",
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    role: Role | None = Role.read  # None: no key needed
    params: type[BaseModel] = NoParams
    body: type[BaseModel] | None = None
    status: int = 200
    answer: type[BaseModel] | None = None  # None: see media_type
    media_type: str = "application/json"
    errors: tuple[int, ...] = (422, 503)
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


def _parameters(model: type[BaseModel], path: str) -> list[dict[str, Any]]:
    out = []
    for name in path.split("{")[1:]:
        out.append(
            {
                "name": name.split("}")[0],
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
            }
        )
    schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        desc = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if desc:
            param["description"] = desc
        if prop.get("type") == "array" or any(
            s.get("type") == "array" for s in prop.get("anyOf", ())
        ):
            param["style"], param["explode"] = "form", True
        out.append(param)
    return out


def openapi(endpoints: list[Endpoint], title: str, version: str) -> dict[str, Any]:
    models: set[type[BaseModel]] = {Error}
    for ep in endpoints:
        if ep.body is not None:
            models.add(ep.body)
        if ep.answer is not None:
            models.add(ep.answer)
    _, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        op: dict[str, Any] = {
            "summary": ep.summary,
            "operationId": f"{ep.method.lower()}_{ep.path.strip('/').replace('/', '_').replace('{', '').replace('}', '') or 'root'}",
            "parameters": _parameters(ep.params, ep.path),
            "responses": {},
        }
        if ep.description:
            op["description"] = ep.description
        if ep.tags:
            op["tags"] = list(ep.tags)
        if ep.role is not None:
            op["security"] = [{"bearer": []}, {"apiKey": []}]
            op["x-role"] = ep.role.name
        if ep.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{ep.body.__name__}"}
                    }
                },
            }
        ok: dict[str, Any] = {"description": "OK"}
        if ep.answer is not None:
            ok["content"] = {
                ep.media_type: {"schema": {"$ref": f"#/components/schemas/{ep.answer.__name__}"}}
            }
        elif ep.status != 204:
            ok["content"] = {ep.media_type: {"schema": {"type": "string"}}}
        op["responses"][str(ep.status)] = ok
        codes = set(ep.errors) | ({401, 403, 429} if ep.role is not None else set())
        for code in sorted(codes):
            op["responses"][str(code)] = {
                "description": _ERRORS.get(code, "error"),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "The deltawire collector's HTTP API. Walkthrough: docs/api.md.",
        },
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }


def docs_page(spec: dict[str, Any]) -> str:
    """A self-contained HTML page of ``spec`` (no scripts or CDNs to fetch)."""
    e = html.escape
    parts = [
        "<!doctype html><meta charset=utf-8><title>deltawire API</title>",
        "<style>body{font:15px system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "code,pre{background:#f4f4f4;padding:0 .2em}h2{margin-top:2em;font-family:monospace}"
        "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}</style>",
        f"<h1>{e(spec['info']['title'])} {e(spec['info']['version'])}</h1>",
        f"<p>{e(spec['info']['description'])} The machine-readable form: "
        "<a href=/openapi.json>/openapi.json</a>.</p>",
    ]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            role = op.get("x-role")
            parts.append(
                f"<h2>{e(method.upper())} {e(path)}</h2><p>{e(op['summary'])}"
                f"{' (role: ' + e(role) + ')' if role else ' (no key needed)'}</p>"
            )
            if op.get("description"):
                parts.append(f"<p>{e(op['description'])}</p>")
            params = op.get("parameters") or []
            if params:
                parts.append("<table><tr><th>parameter<th>in<th>about")
                for p in params:
                    about = p.get("description") or ""
                    parts.append(
                        f"<tr><td><code>{e(p['name'])}</code><td>{e(p['in'])}<td>{e(about)}"
                    )
                parts.append("</table>")
            codes = ", ".join(op["responses"])
            parts.append(f"<p>Answers: {e(codes)}</p>")
    return "\n".join(parts)
