"""Flask CLI: `db upgrade`, `create-token`, `revoke-token`, `create-user`, `register-model`."""
from __future__ import annotations

import logging
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from db.migrate import downgrade, upgrade
from db.models import ROLES, AuditEvent
from web.auth import get_or_create_user, set_password
from web.serialize import iso
from web.tokens import MAX_EXPIRY_DAYS, TokenNotFound, create_token as new_token_row, find_token, revoke
from web.state import app_state, use_celery

logger = logging.getLogger(__name__)
db_group = AppGroup("db", help="Database schema (Alembic migrations).")


@db_group.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    url = app_state().settings.database_url
    upgrade(url, revision)
    click.echo(f"database at revision {revision}")


@db_group.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Take the schema back to REVISION."""
    downgrade(app_state().settings.database_url, revision)
    click.echo(f"database at revision {revision}")


@click.command("create-token")
@with_appcontext
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default=None,
              help="Set the user's role (new users: viewer when omitted; existing users keep theirs).")
@click.option("--expires-in-days", type=click.IntRange(1, MAX_EXPIRY_DAYS), default=None,
              help="The token stops working after this many days (default: never).")
def create_token(name: str, role: str | None, expires_in_days: int | None) -> None:
    """Create user NAME if needed (with --role) and print a new API token as the last line."""
    state = app_state()
    with state.session_factory() as session:
        user = get_or_create_user(session, name, role)
        row, token = new_token_row(session, user, expires_in_days=expires_in_days)
        session.commit()
        role, token_id, expires = user.role, row.id, iso(row.expires)
    until = f"expires {expires}" if expires else "never expires"
    click.echo(f"token {token_id} for {name} ({role}), {until}; it is shown only once:", err=True)
    click.echo(token)


@click.command("revoke-token")
@with_appcontext
@click.argument("ref", metavar="TOKEN_OR_PREFIX_OR_ID")
def revoke_token(ref: str) -> None:
    """Revoke an API token named by its value, its 8-character prefix or its id (audited).

    `flask --app web revoke-token -- "$T"` passes a value that starts with '-' (tokens made
    before tokens avoided a leading dash may).
    """
    state = app_state()
    with state.session_factory() as session:
        try:
            row = find_token(session, ref)
        except TokenNotFound as exc:
            raise click.ClickException(str(exc)) from None
        changed = revoke(session, row, via="cli")
        session.commit()
        what = f"token {row.id} (prefix {row.prefix}, user {row.user.name})"
    click.echo(f"revoked {what}" if changed else f"{what} was already revoked")


@click.command("create-user")
@with_appcontext
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default=None,
              help="Set the user's role (new users: viewer when omitted; existing users keep theirs).")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="Password for the browser login (prompted when omitted).")
def create_user(name: str, role: str | None, password: str) -> None:
    """Create or update user NAME with a password for the browser login."""
    if len(password) < 8:
        raise click.ClickException("the password must be at least 8 characters")
    state = app_state()
    with state.session_factory() as session:
        user = get_or_create_user(session, name, role)
        set_password(user, password)
        session.add(AuditEvent(user_id=user.id, action="user.password", target=f"user:{name}"))
        session.commit()
        role = user.role
    click.echo(f"user {name} ({role}) can log in at /login")


@click.command("register-model")
@with_appcontext
@click.argument("bundle_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--activate", is_flag=True, help="Make it the active version and start waiting jobs.")
def register_model(bundle_dir: Path, activate: bool) -> None:
    """Verify a model bundle folder and record it as a model version."""
    from models.bundle import BundleError
    from tasks.dispatch import dispatch_waiting_jobs
    from tasks.versions import activate_version, register_bundle

    if not bundle_dir.is_dir():
        raise click.ClickException(f"{bundle_dir} is not a folder")
    state = app_state()
    with state.session_factory() as session:
        try:
            version = register_bundle(session, bundle_dir)
        except BundleError as exc:
            raise click.ClickException(f"not a valid model bundle: {exc}") from None
        if activate:
            activate_version(session, version)
        session.add(AuditEvent(action="model.register", target=f"model:{version.id}",
                               detail={"bundle": str(bundle_dir), "activate": activate}))
        session.commit()
        version_id, status = version.id, version.status
    click.echo(f"model version {version_id} ({status}) from {bundle_dir.resolve()}")
    if activate:
        use_celery()
        count = dispatch_waiting_jobs(state.session_factory, state.settings)
        click.echo(f"dispatched {count} waiting job(s)")


def register(app: Flask) -> None:
    """Attach the commands to the app's CLI."""
    app.cli.add_command(db_group)
    for command in (create_token, revoke_token, create_user, register_model):
        app.cli.add_command(command)
