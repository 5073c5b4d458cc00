"""Validation details in the request's language: pydantic's messages are English, so the
French ones (the default) come from this table of pydantic error types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_FRENCH: dict[str, str] = {
    "missing": "Champ obligatoire",
    "json_invalid": "JSON mal formé : {error}",
    "json_type": "Un document JSON est attendu",
    "model_attributes_type": "Un objet est attendu",
    "dict_type": "Un objet est attendu",
    "list_type": "Une liste est attendue",
    "string_type": "Une chaîne de caractères est attendue",
    "string_too_short": "Au moins {min_length} caractère(s)",
    "string_too_long": "Au plus {max_length} caractère(s)",
    "string_pattern_mismatch": "Ne correspond pas au format attendu « {pattern} »",
    "int_type": "Un entier est attendu",
    "int_parsing": "Un entier est attendu",
    "int_from_float": "Un entier est attendu, sans partie décimale",
    "float_type": "Un nombre est attendu",
    "float_parsing": "Un nombre est attendu",
    "bool_type": "Un booléen est attendu",
    "bool_parsing": "Un booléen est attendu",
    "greater_than": "Doit être supérieur à {gt}",
    "greater_than_equal": "Doit être supérieur ou égal à {ge}",
    "less_than": "Doit être inférieur à {lt}",
    "less_than_equal": "Doit être inférieur ou égal à {le}",
    "too_short": "Au moins {min_length} élément(s)",
    "too_long": "Au plus {max_length} élément(s)",
    "literal_error": "Valeur attendue : {expected}",
    "enum": "Valeur attendue : {expected}",
    "extra_forbidden": "Champ non autorisé",
    "datetime_parsing": "Date et heure ISO 8601 attendues",
    "datetime_type": "Date et heure ISO 8601 attendues",
    "value_error": "Valeur invalide : {error}",
}


def validation_detail(error: Mapping[str, Any], language: str) -> dict[str, Any]:
    """`{loc, msg, type}` for one pydantic error, `msg` in `language` ("fr" or "en")."""
    kind = str(error.get("type", ""))
    message = str(error.get("msg", ""))
    if language != "en":
        template = _FRENCH.get(kind)
        if template is not None:
            context = {key: str(value) for key, value in (error.get("ctx") or {}).items()}
            try:
                message = template.format(**context)
            except (KeyError, IndexError):
                message = template.split(":")[0]
    return {"loc": list(error.get("loc", ())), "msg": message, "type": kind}
