"""Output schemas dumped at the cost of a plain function per field: `dumper(schema)`.

marshmallow's `Schema.dump` looks every field's value up through two layers of accessors and calls a
chain of methods per field (bench/rest_overhead.py: a tenth of a page of 50 messages). The schemas stay
what the routes are documented by (OpenAPI) and what validates input; `dumper` reads a schema once and
returns a function giving exactly what `schema.dump` gives, key order included:

- a String, Integer or Boolean field whose value already has the output type is copied as it is;
- a DateTime with a `strftime` format is formatted with it;
- Nested and List fields are compiled the same way, recursively;
- anything else (another field type, a value of another type, a schema with `pre_dump`/`post_dump`
  hooks, its own `get_attribute` or `dump`, a dotted attribute) goes through the schema itself.

`VERIFY` (the test suite sets it) has every call compare its result with `schema.dump`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import Schema, fields
from marshmallow.decorators import POST_DUMP, PRE_DUMP
from marshmallow.utils import missing
from sqlalchemy.engine import Row

VERIFY = False

Dump = Callable[[Any], Any]


def dumper(schema: Schema) -> Dump:
    """A function dumping like `schema.dump` (with the schema's `many`)."""
    one = _compile(schema)
    fast = (lambda objs: [one(obj) for obj in objs]) if schema.many else one

    def dump(obj: Any) -> Any:
        result = fast(obj)
        if VERIFY:
            expected = schema.dump(obj)
            if not _identical(result, expected):
                raise AssertionError(
                    f"{type(schema).__name__}: dumper gave {result!r}, marshmallow {expected!r}"
                )
        return result

    return dump


def _identical(left: Any, right: Any) -> bool:
    """Equal, and with the same types and key order throughout (what the JSON shows)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return list(left) == list(right) and all(_identical(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(_identical(a, b) for a, b in zip(left, right, strict=True))
    return left == right


def _compile(schema: Schema) -> Dump:
    """One object's dump (ignoring `many`)."""
    if (
        schema._hooks[PRE_DUMP]
        or schema._hooks[POST_DUMP]
        or type(schema).get_attribute is not Schema.get_attribute
        or type(schema).dump is not Schema.dump  # a schema dumped by hand already
        or schema.dict_class is not dict
    ):
        return lambda obj: schema.dump(obj, many=False)
    plan = []
    for name, field in schema.dump_fields.items():
        key = field.data_key if field.data_key is not None else name
        source = field.attribute if field.attribute is not None else name
        convert = _converter(field)
        if convert is None or "." in source or not field._CHECK_ATTRIBUTE:
            plan.append((key, None, _marshmallow_field(schema, name, field), None))
        else:
            plan.append((key, source, convert, field.dump_default))

    simple = [(key, source, convert) for key, source, convert, _ in plan if source is not None]
    everything_simple = len(simple) == len(plan)

    def one(obj: Any) -> dict:
        if everything_simple and (type(obj) is dict or isinstance(obj, Row)):
            items = obj if type(obj) is dict else obj._mapping
            try:  # every key there: the common case, one comprehension
                return {key: convert(items[source]) for key, source, convert in simple}
            except KeyError:
                pass  # some key missing: field by field below, as marshmallow goes
        out = {}
        # A dict and a row are read by key (a row's attributes cost five times its mapping's items);
        # marshmallow falls back to an attribute of either.
        items = obj if type(obj) is dict else obj._mapping if isinstance(obj, Row) else None
        for key, source, convert, default in plan:
            if source is None:  # marshmallow's own serialize, missing included
                value = convert(obj)
                if value is not missing:
                    out[key] = value
                continue
            if items is not None:
                value = items[source] if source in items else getattr(obj, source, missing)
            else:
                value = _value(obj, source)
            if value is missing:
                value = default() if callable(default) else default
                if value is missing:
                    continue
            out[key] = convert(value)
        return out

    return one


def _value(obj: Any, key: str) -> Any:
    """marshmallow's `utils.get_value` for an undotted key: an item first, else an attribute."""
    if not hasattr(obj, "__getitem__"):
        return getattr(obj, key, missing)
    try:
        return obj[key]
    except (KeyError, IndexError, TypeError, AttributeError):
        return getattr(obj, key, missing)


def _marshmallow_field(schema: Schema, name: str, field: fields.Field) -> Dump:
    return lambda obj: field.serialize(name, obj, accessor=schema.get_attribute)


def _converter(field: fields.Field) -> Dump | None:
    """The field's `_serialize` of a value, fast for what we use; None: the field's own serialize."""
    kind = type(field)
    slow = field._serialize
    if kind is fields.String:
        return lambda v: v if v is None or type(v) is str else slow(v, None, None)
    if kind is fields.Integer and not field.as_string:
        return lambda v: v if v is None or type(v) is int else slow(v, None, None)
    if kind is fields.Boolean:
        return lambda v: v if v is None or type(v) is bool else slow(v, None, None)
    if kind is fields.DateTime and field.format and field.format not in field.SERIALIZATION_FUNCS:
        fmt = field.format
        return lambda v: None if v is None else v.strftime(fmt)
    if kind is fields.Nested and isinstance(field.nested, Schema | type):  # not a name or a function
        nested = field.schema
        sub = _compile(nested)
        if nested.many or field.many:
            return lambda v: None if v is None else [sub(each) for each in v]
        return lambda v: None if v is None else sub(v)
    if kind is fields.List:
        inner = _converter(field.inner)
        if inner is None:
            return None
        return lambda v: None if v is None else [inner(each) for each in v]
    return None
