"""Paging parameters under the seeds' names."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from shared.paging import page_schema, pages


def test_defaults():
    assert page_schema(20)().load({}) == {"page": 1, "page_size": 20}


@pytest.mark.parametrize(
    "data", [{"page_size": "30"}, {"pageSize": "30"}, {"page_size": "30", "pageSize": "30"}]
)
def test_either_size_name(data):
    assert page_schema(20)().load(data)["page_size"] == 30


def test_conversation_names():
    schema = page_schema(10, page_names=("pageNo",), size_names=("pageSize",))()
    assert schema.load({"pageNo": "2", "pageSize": "5"}) == {"page": 2, "page_size": 5}


@pytest.mark.parametrize(
    "data",
    [
        {"page": "0"},
        {"page": "1.5"},
        {"page_size": "101"},
        {"pageSize": "0"},
        {"page_size": "5", "pageSize": "6"},
    ],
)
def test_invalid_values(data):
    with pytest.raises(ValidationError):
        page_schema(20)().load(data)


def test_pages():
    assert [pages(0, 10), pages(1, 10), pages(10, 10), pages(11, 10)] == [0, 1, 1, 2]


@pytest.mark.parametrize(
    "value", [" 1", "1 ", "\uff11", "\u0661", "1_0", "+1", "-1", "1.0", "1e1", "", 1, True]
)
def test_a_query_number_is_ascii_digits_only(value):
    with pytest.raises(ValidationError):
        page_schema(20)().load({"page": value})


@pytest.mark.parametrize("value", [1.5, 1.0, True, "1", None, [1]])
def test_a_body_number_is_a_json_integer(value):
    with pytest.raises(ValidationError):
        page_schema(20, json=True)().load({"page": value})


def test_a_body_takes_json_integers():
    assert page_schema(20, json=True)().load({"page": 3, "page_size": 7}) == {"page": 3, "page_size": 7}
