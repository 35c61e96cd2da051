"""Reading settings from the environment: typed, every problem collected, each told in one line.

A service's `Config` reads each setting through `Settings` (`settings.integer("DB_POOL_SIZE", 5)`); a value
that does not parse is noted and reading goes on, so one start reports every wrong setting, not the
first. `Settings.raise_problems()` then raises `ConfigError`, whose text is one line per setting.

`ConfigError` is a `click.ClickException`, so `flask --app <service> ...` prints it as `Error: ...`
without a traceback; gunicorn's configs print it the same way and stop (`exit_on_config_error`); and it
is a `ValueError` for everything else.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TypeVar

import click

T = TypeVar("T")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
# gunicorn's "App failed to load": the master stops instead of booting the worker again and again.
APP_LOAD_ERROR = 4


class ConfigError(click.ClickException, ValueError):
    """Settings that cannot be used; `problems` holds one line for each."""

    exit_code = 2

    def __init__(self, problems: list[str], service: str = "") -> None:
        self.problems = list(problems)
        self.service = service
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return self.message

    def lines(self) -> list[str]:
        """What is printed: `<service>: configuration error: <problem>`, one per problem."""
        prefix = f"{self.service}: " if self.service else ""
        return [f"{prefix}configuration error: {problem}" for problem in self.problems]

    def show(self, file=None) -> None:  # click's CLI: the lines on stderr, no traceback
        for line in self.lines():
            click.echo(line, err=True, file=file)


class Settings:
    """Typed reads of one environment; a value that does not parse is a problem, and the default stands."""

    def __init__(self, environ: Mapping[str, str], service: str = "") -> None:
        self.environ = environ
        self.service = service
        self.problems: list[str] = []
        # Every setting read, with its default, in order (.env.example lists them all: a test checks).
        self.names: dict[str, str] = {}

    def text(self, name: str, default: str = "") -> str:
        self.names.setdefault(name, default)
        value = self.environ.get(name)
        return default if value is None else str(value)

    def parse(self, name: str, default: str, parse: Callable[[str], T], fallback: T) -> T:
        """`parse(value)`, whose ValueError becomes a problem naming the setting (then `fallback`)."""
        value = self.text(name, default)
        try:
            return parse(value)
        except ValueError as error:
            text = str(error)
            self.problems.append(text if name in text else f"{name}: {text}")
            return fallback

    def integer(self, name: str, default: int, *, minimum: int | None = None) -> int:
        def parse(value: str) -> int:
            text = value.strip()
            if not (text.isascii() and text.lstrip("-").isdigit()):
                raise ValueError(f"{name} must be a whole number, not {value!r}")
            number = int(text)
            if minimum is not None and number < minimum:
                raise ValueError(f"{name} must be at least {minimum}, not {number}")
            return number

        return self.parse(name, str(default), parse, default)

    def number(self, name: str, default: float, *, minimum: float | None = None) -> float:
        def parse(value: str) -> float:
            try:
                number = float(value.strip())
            except ValueError:
                raise ValueError(f"{name} must be a number, not {value!r}") from None
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError(f"{name} must be a finite number, not {value!r}")
            if minimum is not None and number < minimum:
                raise ValueError(f"{name} must be at least {minimum:g}, not {number:g}")
            return number

        return self.parse(name, repr(default), parse, default)

    def flag(self, name: str, default: bool) -> bool:
        def parse(value: str) -> bool:
            word = value.strip().lower()
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
            raise ValueError(f"{name} must be one of {', '.join(TRUE_WORDS + FALSE_WORDS)}, not {value!r}")

        return self.parse(name, "true" if default else "false", parse, default)

    def items(self, name: str, default: str = "") -> list[str]:
        """A comma-separated list, blanks dropped."""
        return [item.strip() for item in self.text(name, default).split(",") if item.strip()]

    def problem(self, text: str) -> None:
        """A problem found by a check across settings (a key required by another setting, say)."""
        self.problems.append(text)

    def raise_problems(self) -> None:
        if self.problems:
            raise ConfigError(self.problems, self.service)


def exit_on_config_error(check: Callable[[], object]) -> None:
    """Run `check`; on `ConfigError`, print each problem on one line and leave as gunicorn's "App failed
    to load" (a gunicorn hook runs this, so a wrong setting stops the server instead of a traceback per
    worker boot)."""
    try:
        check()
    except ConfigError as error:
        for line in error.lines():
            print(line, file=sys.stderr)
        sys.stderr.flush()
        sys.exit(APP_LOAD_ERROR)
