"""Pydantic's validation errors, rewritten for the people who send requests.

Each error becomes an ``ErrorDetail(loc, message)`` whose loc starts at "spec" or
"opts" and whose message says what is wrong and what would be right ("must be in
[0, 1], got 1.5"; "unknown key 'epoch'; did you mean 'epochs'? allowed: …").
Bounds and allowed keys are read from the models themselves, so they never drift
from the schema.
"""

from __future__ import annotations

import difflib
import types
from typing import Annotated, Any, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError

from ..errors import ErrorDetail
from .normalize import render_loc
from ..operator_config import limit_or_default
from .safe_text import short_repr, type_name



def describe_errors(exc: ValidationError, model: type[BaseModel], root: str,
                    limit: int | None = None) -> list[ErrorDetail]:
    """One detail per problem, the first ``limit`` of them (``exc.error_count()`` says how many).

    ``limit`` defaults to the operator's ``max_error_details``.
    """
    if limit is None:
        limit = limit_or_default("max_error_details")
    details: list[ErrorDetail] = []
    for error in exc.errors(include_url=False):
        if len(details) >= limit:
            break  # explaining 100,000 unknown keys would take seconds and megabytes
        loc = tuple(error["loc"])
        ctx = error.get("ctx") or {}
        if error["type"] == "cross_field":
            # Several located problems raised at once by a model validator.
            for sub_loc, message in ctx["problems"]:
                details.append(ErrorDetail((root,) + _without_tags(model, loc + tuple(sub_loc)), message))
            continue
        loc, message = _explain(error, model, loc)
        details.append(ErrorDetail((root,) + _without_tags(model, loc), message))
    return details


def summary_sentence(details: list[ErrorDetail], total: int | None = None) -> str:
    """One readable sentence naming every wrong field listed (``total``: how many there were)."""
    parts = [f"{render_loc(d.loc)}: {d.message}" for d in details]
    total = max(total or 0, len(parts))
    if total == 1:
        return f"Invalid request: {parts[0]}."
    shown = "" if total == len(parts) else f"; the first {len(parts)} are listed"
    return f"Invalid request ({total} problems{shown}): " + "; ".join(parts) + "."


# --------------------------------------------------------------------------- messages

_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "an object (a map)",
    "model_type": "an object (a map)",
    "model_attributes_type": "an object (a map)",
    "callable_type": "a callable (a function of one event dict)",
}


def _explain(error: dict, model: type[BaseModel], loc: tuple) -> tuple[tuple, str]:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = short_repr(error.get("input"))
    value = error.get("input")
    if kind == "float_type" and isinstance(value, int) and not isinstance(value, bool):
        return loc, f"must be a number a 64-bit float can hold, got {got}"
    if kind in _TYPE_WORDS:
        return loc, f"must be {_TYPE_WORDS[kind]}, got {got} ({type_name(value)})"
    if kind == "invalid_key":
        return loc, _unknown_key(model, loc, note=": keys must be strings")
    if kind == "missing":
        return loc, "is required"
    if kind == "extra_forbidden":
        return loc, _unknown_key(model, loc)
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return loc, _out_of_range(model, loc, ctx, got)
    if kind == "finite_number":
        return loc, f"must be a finite number, got {got}"
    if kind == "literal_error":
        return loc, f"must be one of {ctx.get('expected')}, got {got}"
    if kind in ("too_short", "string_too_short"):
        least = ctx.get("min_length")
        if kind == "string_too_short":
            return loc, f"must be at least {least} character(s) long, got {got}"
        return loc, f"must hold at least {least} item(s), got {ctx.get('actual_length', 0)}"
    if kind in ("too_long", "string_too_long"):
        most = ctx.get("max_length")
        unit = "character(s)" if kind == "string_too_long" else "item(s)"
        return loc, f"must hold at most {most} {unit}, got {got}"
    tag_field = str(ctx.get("discriminator", "'source'")).strip("'")
    if kind == "union_tag_invalid":
        return loc + (tag_field,), (
            f"must be one of {ctx.get('expected_tags')}, got {short_repr(ctx.get('tag'))}"
        )
    if kind == "union_tag_not_found":
        tags = ", ".join(repr(_tag(m)) for m in _models_at(model, loc) if _tag(m) is not None)
        what = "say where the data comes from, one of " if tag_field == "source" else "one of "
        return loc + (tag_field,), f"is required: {what}{tags}"
    if kind == "is_instance_of":
        return loc, f"must be a numpy array ({ctx.get('class')}), got {type_name(error.get('input'))}"
    if kind == "value_error":
        return loc, error["msg"].removeprefix("Value error, ")
    message = error["msg"]
    return loc, f"{message[:1].lower()}{message[1:]}, got {got}"


def _unknown_key(model: type[BaseModel], loc: tuple, note: str = "") -> str:
    key = loc[-1]
    message = f"is not a known key ({short_repr(key)}){note}"
    owners = _models_at(model, loc[:-1])
    if not owners:
        return message
    allowed = list(owners[0].model_fields)
    if isinstance(key, str):
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
    return message + "; allowed: " + ", ".join(allowed)


def _out_of_range(model: type[BaseModel], loc: tuple, ctx: dict, got: str) -> str:
    bounds = _bounds_at(model, loc)
    low = bounds.get("ge", bounds.get("gt"))
    high = bounds.get("le", bounds.get("lt"))
    if low is not None and high is not None:
        opening = "[" if "ge" in bounds else "("
        closing = "]" if "le" in bounds else ")"
        return f"must be in {opening}{low}, {high}{closing}, got {got}"
    words = {"ge": "at least", "gt": "greater than", "le": "at most", "lt": "less than"}
    for name, word in words.items():
        if name in bounds:
            return f"must be {word} {bounds[name]}, got {got}"
    limit = next(iter(ctx.values()), "?")
    return f"is out of range (limit {limit}), got {got}"


# --------------------------------------------------------------------------- model walk


def _flatten(annotation: Any) -> list[Any]:
    """Strip Annotated and Optional/Union into the plain member annotations."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _flatten(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        members = []
        for arg in get_args(annotation):
            if arg is not type(None):
                members.extend(_flatten(arg))
        return members
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


# Fields that discriminate a union of models: spec.dataset.source, opts.executor.kind.
_TAG_FIELDS = ("source", "kind")


def _tag(model: type[BaseModel]) -> Any:
    for name in _TAG_FIELDS:
        field = model.model_fields.get(name)
        if field is not None:
            args = get_args(field.annotation)
            return args[0] if len(args) == 1 else None
    return None


def _without_tags(model: type[BaseModel], loc: tuple) -> tuple:
    """Drop the discriminator tag pydantic puts in locs: spec.dataset.csv.path → spec.dataset.path."""
    kept = []
    current: list[tuple[Any, list]] = [(model, [])]
    for part in loc:
        annotations = [annotation for annotation, _ in current]
        if any(_tag(m) == part for a in annotations for m in _flatten(a) if _is_model(m)):
            current = _step(annotations, part)
            continue
        kept.append(part)
        current = _step(annotations, part) if current else []
    return tuple(kept)


def _step(annotations: list[Any], part: Any) -> list[tuple[Any, list]]:
    """Follow one loc part: [(annotation reached, constraint metadata)]."""
    reached = []
    for annotation in annotations:
        for member in _flatten(annotation):
            if _is_model(member):
                if isinstance(part, str) and part in member.model_fields:
                    info = member.model_fields[part]
                    reached.append((info.annotation, list(info.metadata)))
                elif _tag(member) == part:  # discriminated union: loc names the tag
                    reached.append((member, []))
            elif get_origin(member) is list and isinstance(part, int):
                item = get_args(member)[0]
                metadata = []
                if get_origin(item) is Annotated:
                    for extra in get_args(item)[1:]:
                        metadata.extend(getattr(extra, "metadata", [extra]))
                reached.append((item, metadata))
    return reached


def _walk(model: type[BaseModel], loc: tuple) -> list[tuple[Any, list]]:
    current: list[tuple[Any, list]] = [(model, [])]
    for part in loc:
        current = _step([annotation for annotation, _ in current], part)
        if not current:
            return []
    return current


def _models_at(model: type[BaseModel], loc: tuple) -> list[type[BaseModel]]:
    found = []
    for annotation, _ in _walk(model, loc):
        found.extend(member for member in _flatten(annotation) if _is_model(member))
    return found


def _bounds_at(model: type[BaseModel], loc: tuple) -> dict:
    bounds: dict = {}
    for _, metadata in _walk(model, loc):
        for item in metadata:
            for name in ("ge", "gt", "le", "lt"):
                if isinstance(item, getattr(annotated_types, name.capitalize())):
                    bounds[name] = getattr(item, name)
    return bounds

