"""The `triage` command line: database migrations and clinic set-up (and Flask's run/shell)."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import FlaskGroup
from sqlalchemy.engine import make_url

from service import create_app
from service.store import get_db
from service.store.session import normalize_url


@click.group(cls=FlaskGroup, create_app=create_app, add_version_option=False)
def main() -> None:
    """Back-pain check-ins: configure with DATABASE_URL, TWILIO_*, SECRET_KEY, ..."""


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision.")
def db_upgrade(revision: str) -> None:
    """Migrate the database at DATABASE_URL (SQLite or PostgreSQL)."""
    from service.store import migrate

    url = current_app.config["DATABASE_URL"]
    migrate.upgrade(url, revision)
    shown = make_url(normalize_url(url)).render_as_string(hide_password=True)
    click.echo(f"{shown} is at revision {migrate.current_revision(url)}")


@main.group()
def clinic() -> None:
    """Clinics and their Twilio numbers."""


@clinic.command("create")
@click.option("--name", required=True, help="Shown to patients; at most 40 characters.")
@click.option(
    "--number",
    "numbers",
    multiple=True,
    required=True,
    help="A Twilio number of the clinic (repeat for several).",
)
@click.option("--timezone", default="America/New_York", show_default=True)
@click.option("--emergency-number", default="911", show_default=True)
@click.option("--phone", help="Number HELP replies give; default: the first --number.")
@click.option("--oncall", help="Number that gets urgent and emergency alerts by SMS.")
@click.option(
    "--twilio-optout/--no-twilio-optout",
    default=False,
    show_default=True,
    help="Twilio's own STOP handling is on for these numbers.",
)
@click.option("--keywords", default="PAIN,BACK,DOLOR", show_default=True)
@click.option("--followup-first-day", type=click.IntRange(28, 35), default=28, show_default=True)
@click.option("--followup-final-day", type=click.IntRange(42, 49), default=42, show_default=True)
@click.option("--region", default="US", show_default=True, help="For numbers without +country.")
def clinic_create(
    name: str,
    numbers: tuple[str, ...],
    timezone: str,
    emergency_number: str,
    phone: str | None,
    oncall: str | None,
    twilio_optout: bool,
    keywords: str,
    followup_first_day: int,
    followup_final_day: int,
    region: str,
) -> None:
    """Create a clinic; prints its id."""
    from service.clinics import create_clinic, parse_keywords

    try:
        with get_db().transaction() as session:
            created = create_clinic(
                session,
                name=name,
                numbers=numbers,
                timezone=timezone,
                emergency_number=emergency_number,
                phone=phone,
                oncall_number=oncall,
                twilio_optout_handling=twilio_optout,
                start_keywords=parse_keywords(keywords),
                followup_first_day=followup_first_day,
                followup_final_day=followup_final_day,
                region=region,
                actor_id="cli",
            )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(created.id)


@clinic.command("list")
def clinic_list() -> None:
    """One line per clinic: id, name, timezone, numbers."""
    from service.clinics import list_clinics

    with get_db().transaction() as session:
        clinics = list_clinics(session)
    for each in clinics:
        numbers = ",".join(number.phone_e164 for number in each.numbers)
        click.echo(f"{each.id}\t{each.name}\t{each.timezone}\t{numbers}")
