"""Turn what Pythonx hands to Python into plain Python values.

Pythonx encodes every Elixir binary (so every Elixir string, map keys included) as
``bytes``, Elixir tuples as ``tuple`` and MapSets as ``set``. The rest of the
service wants ``str`` and ``list``; this module converts once, at the door, and
reports anything it cannot convert with the path of the offending value.

Containers are rebuilt; every other object (numpy arrays, callables, Pythonx
PIDs, numbers) is passed through as the very same object, so big arrays are never
copied here.
"""

from __future__ import annotations

from ..errors import ErrorDetail, InputError
from .safe_text import short_repr, type_name

# Deeper than any sensible request; a cap (instead of unbounded recursion) turns a
# pathological input into a clear InputError rather than a RecursionError.
MAX_DEPTH = 100

Loc = tuple  # path from the root: ("spec", "search_space", "activations", 1)


def render_loc(loc: Loc) -> str:
    """``("spec", "search_space", "activations", 1)`` → ``spec.search_space.activations[1]``."""
    text = ""
    for part in loc:
        if isinstance(part, str) and part.isidentifier():
            text += part if not text else "." + part
        else:
            text += f"[{short_repr(part)}]"
    return text


def normalize(value, root: str = "spec"):
    """Return ``value`` with bytes decoded to str and tuples/sets turned into lists.

    Raises InputError (with the path in its details) for bytes that are not UTF-8,
    a dict holding both ``b'k'`` and ``'k'``, or nesting deeper than MAX_DEPTH.
    """
    return _normalize(value, (root,), 0)


def _fail(loc: Loc, message: str) -> InputError:
    return InputError(f"{render_loc(loc)} {message}", [ErrorDetail(tuple(loc), message)])


def _decode(raw: bytes, loc: Loc) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(
            loc,
            f"is not valid UTF-8 text (byte {exc.start} of {len(raw)}): send a UTF-8 string, "
            "or pass binary data as a numpy array",
        ) from None


def _normalize(value, loc: Loc, depth: int):
    if value is None or type(value) in (str, bool, int, float):
        return value
    if isinstance(value, str):
        return str.__str__(value)  # str subclasses (StrEnum, numpy.str_) as plain str
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return _decode(value, loc)
    if depth >= MAX_DEPTH:
        if isinstance(value, (dict, list, tuple, set, frozenset)):
            raise _fail(loc, f"is nested more than {MAX_DEPTH} levels deep")
        return value
    if not isinstance(value, (dict, list, tuple, set, frozenset)):
        return value  # numpy arrays, callables, PIDs, …: the same object, untouched
    try:
        if isinstance(value, dict):
            return _normalize_dict(value, loc, depth)
        items = [_normalize(item, loc + (index,), depth + 1) for index, item in enumerate(value)]
        return _deterministic_order(items) if isinstance(value, (set, frozenset)) else items
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a container subclass whose iteration raises
        raise _fail(loc, f"cannot be read: iterating this {type_name(value)} raised "
                         f"{type_name(exc)}; send plain maps and lists") from None


def _normalize_dict(value: dict, loc: Loc, depth: int) -> dict:
    result: dict = {}
    for key, item in value.items():
        if isinstance(key, (bytes, bytearray)):
            new_key = _decode(key, loc + (f"<key {short_repr(bytes(key))}>",))
        elif isinstance(key, str):
            new_key = str.__str__(key)  # a plain str: a subclass's __eq__/__hash__ is caller code
        elif key is None or type(key) in (bool, int, float, tuple):
            # Non-string keys (ints, tuples) stay as they are: validation reports
            # them as unknown keys, with the key in the path.
            new_key = key
        else:  # an object as a key: its __hash__/__eq__ are caller code, best not called
            raise _fail(loc + (f"<key {short_repr(key)}>",),
                        f"is a key of type {type_name(key)}: keys must be strings")
        try:
            taken = new_key in result
        except Exception as exc:  # noqa: BLE001 - a key whose __hash__ or __eq__ raises
            raise _fail(loc + (f"<key {short_repr(key)}>",),
                        f"is a key of type {type_name(key)} that cannot be compared "
                        f"({type_name(exc)}): keys must be strings") from None
        if taken:
            raise _fail(
                loc + (new_key,),
                f"is given twice, once as bytes and once as a string key ({short_repr(new_key)}); keep one",
            )
        result[new_key] = _normalize(item, loc + (new_key,), depth + 1)
    return result


def _deterministic_order(items: list) -> list:
    """Sets have no order; give the list one that does not depend on PYTHONHASHSEED."""
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=lambda item: (type_name(item), _full_repr(item)))


def _full_repr(item) -> str:
    try:
        return repr(item)
    except Exception:  # noqa: BLE001 - described instead; the order stays deterministic enough
        return short_repr(item)
