"""Marshmallow fields both services use alike: integers as plain ASCII decimal digits.

`int()` accepts `" 1"`, a fullwidth `１`, `1_0` and other scripts' digits; marshmallow's `Integer` takes
`1.5`-like strings, `true` and `"1"` in JSON. A number a client sends is one spelling only.
"""

from __future__ import annotations

import re

from marshmallow import fields

_DIGITS = re.compile(r"[0-9]{1,20}")


class QueryInteger(fields.Integer):
    """An integer in a query string or path: ASCII decimal digits only (no sign, space, `_` or `.`)."""

    def _deserialize(self, value, attr, data, **kwargs) -> int:
        if not (isinstance(value, str) and _DIGITS.fullmatch(value)):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class JsonInteger(fields.Integer):
    """An integer in a JSON body: a JSON integer (not `true`, `1.0`, `1.5` or `"1"`)."""

    def _deserialize(self, value, attr, data, **kwargs) -> int:
        if type(value) is not int:
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)
