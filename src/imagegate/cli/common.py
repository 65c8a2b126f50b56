"""What the commands share: settings loading, a database session, durations and dates."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:  # the rest is imported by the commands that use it: `imagegate --version` imports little
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from imagegate.settings import Settings

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (also IMAGEGATE_CONFIG).")
]
T = TypeVar("T")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when it is imported
DURATION = re.compile(r"^([0-9]+)([smhdw])$")
MAX_DURATION = timedelta(days=36_500)
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def load(config: Path | None, **overrides: Any) -> Settings:
    """Settings for a command; a readable message and exit code 2 when they are wrong."""
    from pydantic import ValidationError

    from imagegate.settings import load_settings

    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"Configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def configure_logging(settings: Settings) -> None:
    """key=value or JSON log lines at the configured level."""
    from imagegate import logs

    logs.configure(level=settings.log_level, fmt=settings.log_format)


def metrics_folder(settings: Settings) -> Path:
    """Where this machine's processes of one deployment share metric files: never on the data volume.

    The files are memory-mapped, so a full disk under them would kill the process; the default is a folder in
    /dev/shm (tmpfs), named after the data folder so that processes sharing it share their metrics.
    """
    if settings.metrics_dir is not None:
        return settings.metrics_dir.resolve()
    tag = hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:16]
    shm = Path("/dev/shm")  # noqa: S108 - a fixed name on purpose (shared by processes); checked when made
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return base / f"imagegate-metrics-{tag}"


def prepare_metrics(settings: Settings) -> None:
    """Let this machine's processes share metrics: before anything imports prometheus_client."""
    if MULTIPROC_ENV not in os.environ:
        folder = metrics_folder(settings)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # In a world-writable place, someone else could have made it first (or put a link there).
        if folder.is_symlink() or folder.stat().st_uid != os.getuid():
            typer.echo(f"Configuration error: {folder} belongs to another user; set IMAGEGATE_METRICS_DIR.", err=True)
            raise typer.Exit(2)
        os.environ[MULTIPROC_ENV] = str(folder)


def announce_database(settings: Settings, *, must_exist: bool = True) -> None:
    """Say on stderr which database the command uses; refuse a SQLite file that does not exist yet.

    A command run from another folder would otherwise create a fresh ./data there, and keys made in it would
    be refused by the running server.
    """
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    path = (
        Path(url.database)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
        else None
    )
    typer.echo(f"Database: {path.resolve() if path else url.render_as_string(hide_password=True)}", err=True)
    if must_exist and path is not None and not path.exists():
        typer.echo(
            f"Error: there is no ImageGate database at {path.resolve()}. Run the command where the server runs, or "
            "point it at the server's settings with --config FILE, IMAGEGATE_DATA_DIR or IMAGEGATE_DATABASE_URL. "
            "(`imagegate db upgrade` or `imagegate serve` creates a new database.)",
            err=True,
        )
        raise typer.Exit(2)


@contextlib.asynccontextmanager
async def sessions_for(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A migrated database's session factory for the length of a command (an existing database only)."""
    from imagegate.db import create_engine, session_factory
    from imagegate.migrations import upgrade

    announce_database(settings)
    await asyncio.to_thread(upgrade, settings.database_url, "head", settings.prices)
    engine = create_engine(settings.database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


def run_db(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run work in one transaction; domain errors become a message and exit code 1."""
    from imagegate.errors import ImagegateError

    async def main() -> T:
        async with sessions_for(settings) as sessions, sessions() as session, session.begin():
            return await work(session)

    try:
        return asyncio.run(main())
    except ImagegateError as error:
        typer.echo(f"Error: {error.message}", err=True)
        raise typer.Exit(1) from None


def parse_duration(value: str) -> timedelta:
    """'90s', '30m', '12h', '30d', '2w' (or '0')."""
    value = value.strip()
    if value == "0":
        return timedelta(0)
    match = DURATION.match(value)
    if not match:
        raise typer.BadParameter("use a duration like 90s, 30m, 12h, 30d or 2w")
    try:
        period = timedelta(**{UNITS[match[2]]: int(match[1])})
    except OverflowError:
        raise typer.BadParameter("that duration is too long; use one under 100 years") from None
    if period > MAX_DURATION:
        raise typer.BadParameter("that duration is too long; use one under 100 years")
    return period


def parse_expiry(value: str, now: datetime | None = None) -> datetime:
    """'30d', '12h', '90m', '2w', or an ISO date/time (UTC unless it says otherwise)."""
    from imagegate.db import utcnow

    now = now or utcnow()
    if DURATION.match(value.strip()):
        return now + parse_duration(value)  # bounded: cannot overflow datetime
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter("use a duration like 30d, 12h, 90m, 2w, or an ISO date like 2027-01-31") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment <= now:
        raise typer.BadParameter("the expiry is in the past")
    return moment


def short(value: datetime | None) -> str:
    """A timestamp for tables."""
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"
