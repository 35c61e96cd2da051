"""shared.dumping: a compiled dump gives what marshmallow's `Schema.dump` gives, key order included."""

from __future__ import annotations

import json
from datetime import datetime
from types import SimpleNamespace

import pytest
from marshmallow import Schema, fields, post_dump

import shared.dumping
from chat_service import schemas as chat_schemas
from conversation_service import schemas as conversation_schemas
from shared.dumping import dumper

WHEN = datetime(2026, 12, 3, 9, 30, 15, 123456)


class Inner(Schema):
    label = fields.String()
    count = fields.Integer()


class Outer(Schema):
    name = fields.String(data_key="Name")
    flag = fields.Boolean()
    when = fields.DateTime(format="%Y-%m-%dT%H:%M:%SZ")
    iso = fields.DateTime()
    inner = fields.Nested(Inner, allow_none=True)
    inners = fields.List(fields.Nested(Inner))
    tags = fields.List(fields.String())
    renamed = fields.String(attribute="source")
    defaulted = fields.String(dump_default="none given")
    method = fields.Method("_shout")

    def _shout(self, obj):
        return "!"


OBJECTS = [
    {
        "name": "名字",
        "flag": True,
        "when": WHEN,
        "iso": WHEN,
        "inner": {"label": "x", "count": 3},
        "inners": [{"label": "a", "count": 1}, SimpleNamespace(label="b", count=2)],
        "tags": ["t", "u"],
        "source": "from source",
    },
    {
        "name": None,
        "flag": None,
        "when": None,
        "inner": None,
        "inners": [],
        "tags": None,
    },  # Nones, keys missing
    SimpleNamespace(name="ns", flag=False, when=WHEN, iso=WHEN, inner=None, inners=[], tags=[], source="s"),
    {"name": 12, "flag": 1, "inner": {"label": 5, "count": "7"}},  # values of other types: marshmallow's way
]


@pytest.mark.parametrize("obj", OBJECTS)
def test_the_compiled_dump_is_marshmallows_exactly(obj):
    schema = Outer()
    got, expected = dumper(schema)(obj), schema.dump(obj)
    assert json.dumps(got, ensure_ascii=False) == json.dumps(expected, ensure_ascii=False)
    assert shared.dumping._identical(got, expected)


def test_many_and_nested_schemas_with_hooks_keep_their_hooks():
    class Hooked(Schema):
        value = fields.Integer()

        @post_dump
        def _double(self, data, **kwargs):
            return {"value": data["value"] * 2}

    class Holder(Schema):
        items = fields.List(fields.Nested(Hooked))

    assert dumper(Holder())({"items": [{"value": 2}]}) == {"items": [{"value": 4}]}
    assert dumper(Hooked(many=True))([{"value": 1}, {"value": 3}]) == [{"value": 2}, {"value": 6}]


def test_a_difference_from_marshmallow_is_caught_while_verifying(monkeypatch):
    monkeypatch.setattr(shared.dumping, "VERIFY", True)
    schema = Inner()
    dump = dumper(schema)
    monkeypatch.setattr(schema, "dump", lambda obj, **kwargs: {"count": 1, "label": "x"})  # other key order
    with pytest.raises(AssertionError):
        dump({"label": "x", "count": 1})


def _output_schemas(module):
    return [
        value
        for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, Schema) and name.endswith("Schema")
    ]


@pytest.mark.parametrize(
    "schema_class",
    _output_schemas(chat_schemas) + _output_schemas(conversation_schemas),
    ids=lambda cls: f"{cls.__module__.split('.')[0]}.{cls.__name__}",
)
def test_every_output_schema_dumps_an_object_of_nones_like_marshmallow(schema_class):
    """Every field None (the suite, with VERIFY on, checks them with real objects on every route)."""
    schema = schema_class()
    obj = SimpleNamespace(**{field.attribute or name: None for name, field in schema.dump_fields.items()})
    try:
        expected = schema.dump(obj)
    except Exception as error:  # a Method field that needs a real object: the dumper fails alike
        with pytest.raises(type(error)):
            dumper(schema)(obj)
        return
    assert shared.dumping._identical(dumper(schema)(obj), expected)


def test_a_sqlalchemy_row_is_read_by_its_columns_as_marshmallow_reads_it():
    import sqlalchemy as sa

    engine = sa.create_engine("sqlite://")
    with engine.connect() as connection:
        both = connection.execute(sa.text("SELECT 'x' AS label, 3 AS number")).first()
        label_only = connection.execute(sa.text("SELECT 'y' AS label")).first()

    class Numbered(Schema):
        label = fields.String()
        number = fields.Integer()

    schema = Numbered()
    for row in (both, label_only):
        assert shared.dumping._identical(dumper(schema)(row), schema.dump(row))
    assert dumper(schema)(label_only) == {"label": "y"}
