"""Request validation: JSON bodies, query strings and path parameters against pydantic models.

Every failure is an :class:`~producer.exceptions.ApiError` with the common error body: 415 for
another content type, 400 for a body that is not JSON, 413 for one over the limit, 422 naming
each offending field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from .exceptions import ApiError, ValidationFailed


def _field_errors(exc: ValidationError, where: str) -> list[dict[str, Any]]:
    fields = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "field required"
        elif error["type"] == "model_type":
            message = f"{where} must be a JSON object"
        fields.append({"field": loc or where, "message": message, "type": error["type"]})
    return fields


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: ``json.loads(raw, parse_constant=...)`` builds a decoder and its scanner on every call
#: (about 5 us a request); one decoder serves every thread, as json's default one does.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def load_json(raw: bytes) -> Any:
    """``json.loads(raw, parse_constant=_reject_constant)``, on the shared decoder."""
    return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


def _body_bytes() -> bytes:
    """The request body, refused with 413 when it is over the request's limit.

    With a ``Content-Length``, the body is refused before it is read, as Werkzeug does, and
    read from the server's stream in one call: Werkzeug's ``get_data`` wraps the stream in a
    ``LimitedStream`` and reads it in a loop (about 15 us a request, more than the JSON parse).
    The body is read once, here; nothing else in the app reads it.
    A chunked body has none, and Werkzeug then cuts it at the limit without saying so (the
    rest would be parsed as truncated JSON, a misleading 400): read it here, up to one byte
    past the limit.
    """
    limit = request.max_content_length
    environ = request.environ
    length = request.content_length
    if length is not None:
        if limit is not None and length > limit:
            raise RequestEntityTooLarge()
        body: bytes = environ["wsgi.input"].read(length) if length else b""
        if len(body) < length:
            raise ClientDisconnected()
        return body
    if limit is None or "wsgi.input_terminated" not in environ:
        return request.get_data(cache=True)
    stream, chunks = environ["wsgi.input"], bytearray()
    while len(chunks) <= limit:
        chunk = stream.read(min(65536, limit + 1 - len(chunks)))
        if not chunk:
            return bytes(chunks)
        chunks += chunk
    raise RequestEntityTooLarge()


def parse_json_body() -> Any:
    """The request body as JSON, or a 415/400 :class:`ApiError`."""
    # The usual header as it comes needs no parsing into a mimetype and its options.
    if request.environ.get("CONTENT_TYPE") != "application/json" and request.mimetype != "application/json":
        raise ApiError(
            "Content-Type must be application/json",
            status=415,
            code="unsupported_media_type",
        )
    raw = _body_bytes()
    try:
        return load_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(f"body is not valid JSON: {exc}", status=400, code="invalid_json") from None


def _validated(
    model: type[BaseModel], data: Any, where: str, label: str, *, strict: bool | None
) -> BaseModel:
    """``model`` validated from ``data``, or a 422 naming each field (``<where>.<field>``)."""
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        fields = _field_errors(exc, where)
        raise ValidationFailed(
            f"invalid {label}: " + "; ".join(f"{f['field']}: {f['message']}" for f in fields),
            fields=fields,
        ) from None


def parse_body(model: type[BaseModel]) -> BaseModel:
    """Validate the JSON body against ``model`` strictly (no type coercion)."""
    return _validated(model, parse_json_body(), "body", "request body", strict=True)


def parse_query(model: type[BaseModel]) -> BaseModel:
    """Validate the query string against ``model`` (strings convert to the declared types)."""
    if not request.environ.get("QUERY_STRING"):
        # No query: skip parsing one into a MultiDict (most requests have none).
        return _validated(model, {}, "query", "query", strict=None)
    data: dict[str, Any] = {}
    for key in request.args:
        values = request.args.getlist(key)
        data[key] = values[0] if len(values) == 1 else values
    return _validated(model, data, "query", "query", strict=None)


def parse_path(model: type[BaseModel], values: Mapping[str, Any]) -> BaseModel:
    """Validate the path parameters (already split out by the URL rule) against ``model``."""
    return _validated(model, dict(values), "path", "path", strict=True)
