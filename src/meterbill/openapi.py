"""The OpenAPI document as a contract: security schemes, and every error an operation can
answer, documented with the real error body.

Errors are declared where they are raised: a route or a dependency lists its error classes
with `@raises(...)`, and `install_openapi` walks every route's dependency tree to add them
to the operation's responses. A helper adding an endpoint only writes `@raises(MyError)`
(or passes `responses=error_responses(MyError)`); nothing here needs to know about it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field

from meterbill.errors import MeterbillError, PayloadTooLarge

F = TypeVar("F", bound=Callable[..., Any])
_ATTRIBUTE = "__meterbill_errors__"


class ErrorOut(BaseModel):
    """Every error answer: a message in the request's language, a stable code, and for some
    codes the details named in the error catalogue (docs/errors.md)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="Message, French by default, English for Accept-Language: en")
    code: str = Field(description="Stable machine code (see docs/errors.md)")
    details: Any = Field(None, description="What was wrong, for validation errors")


class HttpError(MeterbillError):
    """Errors the framework answers before a handler runs (declared here so the catalogue
    and the OpenAPI document list them like any other)."""


class ValidationFailed(HttpError):
    status = 422
    code = "validation_error"
    message_fr = "Requête invalide"
    message_en = "Invalid request"


class MalformedJson(HttpError):
    status = 400
    code = "invalid_json"
    message_fr = "Corps de requête JSON mal formé"
    message_en = "Malformed JSON request body"


class MethodNotAllowed(HttpError):
    status = 405
    code = "method_not_allowed"
    message_fr = "Méthode non autorisée"
    message_en = "Method not allowed"


class DatabaseUnavailable(HttpError):
    status = 503
    code = "database_unavailable"
    message_fr = "Base de données injoignable"
    message_en = "Database unreachable"


class InternalError(HttpError):
    status = 500
    code = "internal_error"
    message_fr = "Erreur interne"
    message_en = "Internal error"


def raises(*errors: type[MeterbillError]) -> Callable[[F], F]:
    """Declare the errors a route or a dependency may answer (for the OpenAPI document)."""

    def mark(function: F) -> F:
        declared = (*getattr(function, _ATTRIBUTE, ()), *errors)
        setattr(function, _ATTRIBUTE, declared)
        return function

    return mark


def error_responses(*errors: type[MeterbillError]) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` documenting these errors, grouped by status."""
    grouped: dict[int, list[type[MeterbillError]]] = {}
    for error in errors:
        grouped.setdefault(error.status, [])
        if error.code not in {e.code for e in grouped[error.status]}:
            grouped[error.status].append(error)
    return {
        status: {
            "model": ErrorOut,
            "description": "; ".join(f"`{e.code}`: {e.message_en}" for e in group),
        }
        for status, group in sorted(grouped.items())
    }


def _declared(dependant: Dependant) -> Iterable[type[MeterbillError]]:
    if dependant.call is not None:
        yield from getattr(dependant.call, _ATTRIBUTE, ())
    for sub in dependant.dependencies:
        yield from _declared(sub)


def _scopes(dependant: Dependant) -> Iterable[str]:
    if dependant.call is not None and hasattr(dependant.call, "__meterbill_scope__"):
        yield str(dependant.call.__meterbill_scope__)
    for sub in dependant.dependencies:
        yield from _scopes(sub)


def _route_errors(route: RouteContext, operation: dict[str, Any]) -> list[type[MeterbillError]]:
    errors = list(_declared(route.dependant))
    if operation.get("parameters") or operation.get("requestBody"):
        errors.append(ValidationFailed)
    body = operation.get("requestBody", {}).get("content", {})
    if "application/json" in body:
        errors += [MalformedJson, PayloadTooLarge]
    return errors


def _error_schema(components: dict[str, Any]) -> dict[str, Any]:
    schema = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    components.setdefault("schemas", {})["ErrorOut"] = schema
    return {"$ref": "#/components/schemas/ErrorOut"}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the declared errors of every operation."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    components = document.setdefault("components", {})
    reference = _error_schema(components)
    for schemas in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(schemas, None)
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = document["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            scopes = sorted(set(_scopes(route.dependant)))
            if scopes:
                operation["x-meterbill-scopes"] = scopes
                needed = ", ".join(f"`{scope}`" for scope in scopes)
                operation["description"] = (
                    f"{operation.get('description', '')}\n\nAPI key scope: {needed}."
                ).strip()
            responses = operation.setdefault("responses", {})
            for status, spec in error_responses(*_route_errors(route, operation)).items():
                entry = responses.setdefault(str(status), {"description": ""})
                codes = spec["description"]
                described = entry.get("description", "")
                if described in ("", "Validation Error", "Successful Response"):
                    entry["description"] = codes
                elif codes not in described:
                    entry["description"] = f"{described}; {codes}"
                entry["content"] = {"application/json": {"schema": reference}}
            for status, entry in responses.items():
                # FastAPI's own 422 schema, or a `responses=` entry naming ErrorOut.
                content = entry.get("content", {}).get("application/json", {})
                if status.startswith(("4", "5")) and "schema" in content:
                    content["schema"] = reference
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve the contract built by `build_openapi` (once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
