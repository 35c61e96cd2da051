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
    click.echo(mint_token(subject, service=service, ttl_seconds=ttl))


def init_app(app: Flask) -> None:
    app.cli.add_command(token_command)
