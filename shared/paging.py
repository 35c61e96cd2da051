"""Page-number paging that accepts the seeds' parameter names (`page`/`pageNo`, `page_size`/`pageSize`)."""

from __future__ import annotations

from dataclasses import dataclass

from marshmallow import EXCLUDE, Schema, ValidationError, pre_load, validate

from shared.fields import JsonInteger, QueryInteger

MAX_PAGE_SIZE = 100
MAX_PAGE = 1_000_000


@dataclass(frozen=True)
class Page:
    page: int
    page_size: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


def page_schema(
    default_size: int,
    *,
    page_names: tuple[str, ...] = ("page",),
    size_names: tuple[str, ...] = ("page_size", "pageSize"),
    json: bool = False,
) -> type[Schema]:
    """A schema loading `{page, page_size}` from any of the given names (two that differ is 1001):
    ASCII digits in a query string, JSON integers in a body (`json=True`)."""
    number = JsonInteger if json else QueryInteger

    class PageArgs(Schema):
        class Meta:
            unknown = EXCLUDE

        page = number(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
        page_size = number(load_default=default_size, validate=validate.Range(min=1, max=MAX_PAGE_SIZE))

        @pre_load
        def _aliases(self, data, **kwargs):
            if not isinstance(data, dict):
                return data
            data = dict(data)
            for canonical, names in (("page", page_names), ("page_size", size_names)):
                given = {name: data.pop(name) for name in names if name in data}
                if len(set(map(str, given.values()))) > 1:
                    raise ValidationError(f"conflicting values for {', '.join(given)}", canonical)
                if given:
                    data[canonical] = next(iter(given.values()))
            return data

    return PageArgs


def pages(total: int, page_size: int) -> int:
    return -(-total // page_size)
