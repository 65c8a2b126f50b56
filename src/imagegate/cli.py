"""The imagegate command: serve, worker, db upgrade, keys, cleanup, generate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.db import create_engine, session_factory, utcnow
from imagegate.errors import ImagegateError
from imagegate.keys import service as keys
from imagegate.migrations import upgrade
from imagegate.settings import Settings, load_settings

app = typer.Typer(help="ImageGate: a self-hosted image-generation gateway.", no_args_is_help=True)
keys_app = typer.Typer(help="Issue and manage API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file (also IMAGEGATE_CONFIG).")
]
T = TypeVar("T")
DURATION = re.compile(r"^(\d+)([mhdw])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"Configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


def _logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Run the HTTP service (migrating the database first) with its workers."""
    import uvicorn

    from imagegate.app import create_app

    settings = _settings(config, host=host, port=port)
    _logging(settings)
    typer.echo(f"ImageGate listening on http://{settings.host}:{settings.port} (data in {settings.data_dir})")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or None,
    )


@app.command()
def worker(config: ConfigOption = None) -> None:
    """Run only the job workers (no HTTP), e.g. beside API processes on one PostgreSQL database."""
    from imagegate.app import create_app, running

    settings = _settings(config, run_scheduler=True)
    _logging(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        application = create_app(settings)
        async with running(application, settings):
            typer.echo("ImageGate worker running; Ctrl-C to stop.")
            await stop.wait()

    asyncio.run(main())


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply database migrations up to the newest schema."""
    settings = _settings(config)
    upgrade(settings.database_url)
    typer.echo("Database is up to date.")


@contextlib.asynccontextmanager
async def _sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    await asyncio.to_thread(upgrade, settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


def _run_db(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def main() -> T:
        async with _sessions(settings) as sessions, sessions() as session, session.begin():
            return await work(session)

    try:
        return asyncio.run(main())
    except ImagegateError as error:
        typer.echo(f"Error: {error.message}", err=True)
        raise typer.Exit(1) from None


def parse_expiry(value: str, now: datetime | None = None) -> datetime:
    """'30d', '12h', '90m', '2w', or an ISO date/time (UTC unless it says otherwise)."""
    now = now or utcnow()
    match = DURATION.match(value.strip())
    if match:
        return now + timedelta(**{UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter("use a duration like 30d, 12h, 90m, 2w, or an ISO date like 2027-01-31") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment <= now:
        raise typer.BadParameter("the expiry is in the past")
    return moment


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    expires: Annotated[str | None, typer.Option(help="30d, 12h, 2w, or an ISO date.")] = None,
    config: ConfigOption = None,
) -> None:
    """Create a key and print it once."""
    settings = _settings(config)
    expires_at = parse_expiry(expires) if expires else None
    key, token = _run_db(settings, lambda s: keys.create_key(session=s, name=name, expires_at=expires_at))
    typer.echo(f"Created key {key.handle} ({key.name}).")
    if key.expires_at:
        typer.echo(f"Expires at {key.expires_at.isoformat()}.")
    typer.echo("The key is shown only this once; store it now:\n")
    typer.echo(token)


@keys_app.command("list")
def keys_list(config: ConfigOption = None) -> None:
    """List keys (handles, never secrets)."""
    rows = _run_db(_settings(config), lambda s: keys.list_keys(session=s))
    if not rows:
        typer.echo("No keys yet. Create one with: imagegate keys create NAME")
        return
    now = utcnow()
    typer.echo(f"{'HANDLE':<18} {'STATUS':<9} {'CREATED':<20} {'LAST USED':<20} {'EXPIRES':<20} NAME")
    for key in rows:
        status = (
            "disabled" if not key.enabled else ("expired" if key.expires_at and key.expires_at <= now else "enabled")
        )
        typer.echo(
            f"{key.handle:<18} {status:<9} {_short(key.created_at):<20} {_short(key.last_used_at):<20} "
            f"{_short(key.expires_at):<20} {key.name}"
        )


def _short(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


@keys_app.command("disable")
def keys_disable(handle: str, config: ConfigOption = None) -> None:
    """Disable a key: requests with it get 403 until it is enabled again."""
    _run_db(_settings(config), lambda s: keys.set_enabled(session=s, handle=handle, enabled=False))
    typer.echo(f"Disabled {handle}.")


@keys_app.command("enable")
def keys_enable(handle: str, config: ConfigOption = None) -> None:
    """Enable a disabled key."""
    _run_db(_settings(config), lambda s: keys.set_enabled(session=s, handle=handle, enabled=True))
    typer.echo(f"Enabled {handle}.")


@keys_app.command("delete")
def keys_delete(handle: str, config: ConfigOption = None) -> None:
    """Delete a key for good; its jobs stay in the history."""
    _run_db(_settings(config), lambda s: keys.delete_key(session=s, handle=handle))
    typer.echo(f"Deleted {handle}.")


@app.command()
def cleanup(config: ConfigOption = None) -> None:
    """Expire due jobs and remove orphan files now."""
    from imagegate.retention import sweep
    from imagegate.storage import storage_for

    settings = _settings(config)

    async def main() -> None:
        async with _sessions(settings) as sessions:
            report = await sweep(sessions=sessions, storage=storage_for(settings), settings=settings)
        typer.echo(
            f"Expired {report.expired_jobs} job(s); removed {report.deleted_files} file(s) and "
            f"{report.orphan_files} orphan file(s)."
        )
        for problem in report.errors:
            typer.echo(f"Could not remove {problem}", err=True)

    asyncio.run(main())


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to save (several: name-2.png, …).")],
    url: Annotated[str, typer.Option(envvar="IMAGEGATE_URL", help="The server.")] = "http://127.0.0.1:8000",
    key: Annotated[str | None, typer.Option(envvar="IMAGEGATE_API_KEY", help="Your API key.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name.")] = None,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT or auto.")] = "auto",
    quality: Annotated[str, typer.Option()] = "auto",
    count: Annotated[int, typer.Option()] = 1,
    output_format: Annotated[str | None, typer.Option("--format", help="png, jpeg, webp.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the result.")] = 600.0,
) -> None:
    """Generate images on a running server and save them (a client: needs --key or IMAGEGATE_API_KEY)."""
    from imagegate.client import ClientError, generate_to_files

    if not key:
        typer.echo("An API key is needed: --key ig_… or IMAGEGATE_API_KEY.", err=True)
        raise typer.Exit(2)
    fmt = output_format or (output.suffix.lstrip(".").lower().replace("jpg", "jpeg") or "png")
    body = {"prompt": prompt, "size": size, "quality": quality, "count": count, "output_format": fmt}
    if model:
        body["model"] = model
    try:
        saved = asyncio.run(generate_to_files(url=url, key=key, body=body, output=output, timeout=timeout))
    except ClientError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    for path in saved:
        typer.echo(str(path))


def main() -> None:
    """Console script entry point."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
