"""`flask --app <service> token USER_ID`: mint a token signed with the configured key (for development)."""

from __future__ import annotations

import click
from flask import Flask

from shared.auth import mint_token


@click.command("token")
@click.argument("subject")
@click.option("--service", is_flag=True, help="Mint a service token (claim typ=service).")
@click.option("--ttl", default=86400, show_default=True, help="Lifetime in seconds.")
def token_command(subject: str, service: bool, ttl: int) -> None:
    """Print a bearer token for SUBJECT (a user id, or a service name with --service)."""
    try:
        click.echo(mint_token(subject, service=service, ttl_seconds=ttl))
    except RuntimeError as error:  # no key to sign with: one line, not a traceback
        raise click.ClickException(str(error)) from None


def serving() -> bool:
    """Whether the app being built will answer requests, and so needs its runtime secrets.

    Flask's CLI builds the app inside a click context: there only `flask run` serves; `flask db upgrade`,
    `flask openapi` and `flask token` need no key to check tokens nor an AI provider's key (the app is
    built while click resolves the command's name, so the name itself is not known yet). gunicorn and
    tests build it outside any click context, and serve.
    """
    context = click.get_current_context(silent=True)
    if context is None:
        return True
    while context is not None:
        if context.info_name == "run":
            return True
        context = context.parent
    return False


def init_app(app: Flask) -> None:
    app.cli.add_command(token_command)
