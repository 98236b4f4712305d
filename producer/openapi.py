"""The OpenAPI document, from the same pydantic models that validate requests.

A view declares its models once with :func:`operation`; the decorator validates the request
with them (:mod:`producer.validation`) and :func:`build_spec` documents them, so the contract
and the checks cannot drift.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from flask import Flask, has_app_context, request
from pydantic import BaseModel
from werkzeug.routing import (
    AnyConverter,
    BaseConverter,
    FloatConverter,
    IntegerConverter,
    Rule,
    UUIDConverter,
)

from .schemas import ErrorBody
from .validation import parse_body, parse_path, parse_query

F = TypeVar("F", bound=Callable[..., Any])

#: Status codes answered with :class:`ErrorBody`, and what they mean.
ERROR_DESCRIPTIONS = {
    400: "Malformed request (not JSON, bad query)",
    401: "Missing or wrong bearer token",
    404: "Not found (also: a path parameter that its converter refuses)",
    405: "Method not allowed; the `Allow` header lists the methods of the path",
    409: "Conflict with the current state",
    413: "Request body too large",
    415: "Content-Type is not application/json",
    422: "Validation failed; `fields` names each offending field",
    503: "Redis or the database is unreachable; retry later",
}


@dataclass(frozen=True)
class TextResponse:
    """A response that is not JSON (``/metrics``): documented as a string of ``media_type``."""

    description: str
    media_type: str = "text/plain"


@dataclass(frozen=True)
class Operation:
    """What :func:`build_spec` needs to document one view."""

    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    responses: Mapping[int, type[BaseModel] | TextResponse | str | None] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    public: bool = False
    path: type[BaseModel] | None = None
    max_body: Callable[[], int] | None = None
    description: str | None = None


def operation(
    summary: str,
    *,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    path: type[BaseModel] | None = None,
    responses: Mapping[int, type[BaseModel] | TextResponse | str | None] | None = None,
    tags: tuple[str, ...] = (),
    public: bool = False,
    max_body: Callable[[], int] | None = None,
    description: str | None = None,
) -> Callable[[F], F]:
    """Declare a view's models: validate ``path``/``query``/``body`` and pass them as keyword arguments.

    ``responses`` maps status codes to a response model, a :class:`TextResponse`, a description,
    or ``None``. Error statuses (4xx/5xx) are documented with the common error body. ``path``
    validates the URL rule's variables (the view then gets ``path=`` instead of them).
    ``max_body`` returns this view's request body limit in bytes when it differs from
    ``MAX_CONTENT_LENGTH``.
    """
    op = Operation(summary, body, query, dict(responses or {}), tags, public, path, max_body, description)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if path is not None:
                names = set(path.model_fields)
                values = {name: kwargs.pop(name) for name in list(kwargs) if name in names}
                kwargs["path"] = parse_path(path, values)
            if query is not None:
                kwargs["query"] = parse_query(query)
            if body is not None:
                if max_body is not None:
                    # Before the body is first read: Werkzeug enforces the limit while reading.
                    request.max_content_length = max_body()
                kwargs["body"] = parse_body(body)
            return view(*args, **kwargs)

        wrapper.__openapi__ = op  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate


_RULE_ARG = re.compile(r"<(?:(?P<conv>[A-Za-z_]\w*)(?:\([^)]*\))?:)?(?P<name>\w+)>")

DESCRIPTION = (
    'Every error answers `{"error": {"code", "message", "fields"?}}` '
    "(`ErrorBody`), Flask's own 404/405/413/415 included. A method a path does not list "
    "answers 405 with an `Allow` header (`components.responses.Error405`)."
)


def _converter_schema(converter: BaseConverter | None) -> dict[str, Any]:
    """The JSON schema of what a Werkzeug converter accepts (anything else is a 404)."""
    if isinstance(converter, IntegerConverter):
        schema: dict[str, Any] = {"type": "integer"}
        minimum = converter.min if converter.min is not None else (None if converter.signed else 0)
        if minimum is not None:
            schema["minimum"] = minimum
        if converter.max is not None:
            schema["maximum"] = converter.max
        return schema
    if isinstance(converter, FloatConverter):
        return {"type": "number"}
    if isinstance(converter, UUIDConverter):
        return {"type": "string", "format": "uuid"}
    if isinstance(converter, AnyConverter):
        return {"type": "string", "enum": sorted(converter.items)}
    if converter is not None and not converter.part_isolating:
        return {"type": "string", "minLength": 1}
    return {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}


def _schema_ref(model: type[BaseModel], components: dict[str, Any], mode: str) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)  # type: ignore[arg-type]
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    name = model.__name__
    components.setdefault(name, schema)
    return {"$ref": f"#/components/schemas/{name}"}


def _error_response(status: int, components: dict[str, Any], responses: dict[str, Any]) -> dict[str, Any]:
    """A reference to the shared error response for ``status``, created on first use."""
    name = f"Error{status}"
    if name not in responses:
        response: dict[str, Any] = {
            "description": ERROR_DESCRIPTIONS.get(status, "Error"),
            "content": {"application/json": {"schema": _schema_ref(ErrorBody, components, "serialization")}},
        }
        if status == 405:
            response["headers"] = {"Allow": {"schema": {"type": "string"}, "required": True}}
        elif status == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}}
        elif status == 503:
            response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
        responses[name] = response
    return {"$ref": f"#/components/responses/{name}"}


def undocumented_rules(app: Flask) -> list[Rule]:
    """URL rules of ``app`` whose view was not declared with :func:`operation` (static files aside)."""
    return [
        rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        and getattr(app.view_functions.get(rule.endpoint), "__openapi__", None) is None
    ]


def _parameters(rule: Rule, op: Operation) -> tuple[str, list[dict[str, Any]]]:
    """The OpenAPI path template of ``rule`` and its path and query parameters."""
    parameters: list[dict[str, Any]] = []
    converters: Mapping[str, BaseConverter] = getattr(rule, "_converters", {})
    path_schema = op.path.model_json_schema()["properties"] if op.path is not None else {}

    def to_param(match: re.Match[str]) -> str:
        name = match.group("name")
        schema = path_schema.get(name) or _converter_schema(converters.get(name))
        param: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": schema}
        if "description" in schema:
            param["description"] = schema["description"]
        parameters.append(param)
        return "{" + name + "}"

    template = _RULE_ARG.sub(to_param, rule.rule)
    if op.query is not None:
        qschema = op.query.model_json_schema(ref_template="#/components/schemas/{model}")
        required = set(qschema.get("required", []))
        for name, prop in qschema.get("properties", {}).items():
            parameters.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return template, parameters


def build_spec(app: Flask, *, auth: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every documented route of ``app``."""
    if not has_app_context():
        with app.app_context():
            return build_spec(app, auth=auth)
    components: dict[str, Any] = {}
    shared_responses: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    _error_response(405, components, shared_responses)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        op: Operation | None = getattr(view, "__openapi__", None)
        if op is None:
            continue
        path, parameters = _parameters(rule, op)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            responses: dict[str, Any] = {}
            statuses = dict(op.responses)
            if rule.arguments:
                statuses.setdefault(404, None)
            if op.body is not None:
                for status in (400, 413, 415, 422):
                    statuses.setdefault(status, None)
            if op.query is not None or op.path is not None:
                statuses.setdefault(422, None)
            if auth and not op.public:
                statuses.setdefault(401, None)
            for status, target in sorted(statuses.items()):
                is_model = isinstance(target, type) and issubclass(target, BaseModel)
                if status >= 400 and not is_model:
                    responses[str(status)] = _error_response(status, components, shared_responses)
                elif isinstance(target, type) and issubclass(target, BaseModel):
                    responses[str(status)] = {
                        "description": target.__doc__.strip().splitlines()[0] if target.__doc__ else "OK",
                        "content": {
                            "application/json": {"schema": _schema_ref(target, components, "serialization")}
                        },
                    }
                elif isinstance(target, TextResponse):
                    responses[str(status)] = {
                        "description": target.description,
                        "content": {target.media_type: {"schema": {"type": "string"}}},
                    }
                else:
                    responses[str(status)] = {"description": target or "OK"}
            entry: dict[str, Any] = {
                "summary": op.summary,
                "operationId": f"{rule.endpoint}.{method.lower()}",
                "tags": list(op.tags),
                "parameters": parameters,
                "responses": responses,
            }
            if op.description:
                entry["description"] = op.description
            if op.body is not None:
                limit = op.max_body() if op.max_body is not None else app.config.get("MAX_CONTENT_LENGTH")
                body_schema = _schema_ref(op.body, components, "validation")
                entry["requestBody"] = {
                    "required": True,
                    "description": f"JSON (`application/json`), at most {limit} bytes (else 413)",
                    "content": {"application/json": {"schema": body_schema}},
                }
            if auth and op.public:
                entry["security"] = []
            paths.setdefault(path, {})[method.lower()] = entry
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Redis Archive producer API", "version": "1.0.0", "description": DESCRIPTION},
        "paths": paths,
        "components": {"schemas": components, "responses": shared_responses},
    }
    if auth:
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        spec["security"] = [{"bearer": []}]
    return spec
