"""`imagegate storage …`: check the configured store, and copy a local install's files to another store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from imagegate.cli.common import ConfigOption, load
from imagegate.errors import ImagegateError

if TYPE_CHECKING:
    from imagegate.storage import Storage

storage_app = typer.Typer(help="The image store: check it, or copy its files to another.", no_args_is_help=True)


@storage_app.command("check")
def check(config: ConfigOption = None) -> None:
    """Write, read back and delete a probe object in the configured store; say which store it is."""
    from imagegate.storage import LocalStorage, storage_for

    settings = load(config)
    storage = _opened(lambda: storage_for(settings))
    typer.echo(f"Storage: {storage.describe()}")
    try:
        asyncio.run(storage.check())
    except ImagegateError as error:
        typer.echo(f"Error: {error.message} (the log line above says why)", err=True)
        raise typer.Exit(1) from None
    typer.echo("OK: a probe object was written, read back and deleted.")
    if isinstance(storage, LocalStorage) and not settings.is_sqlite:
        typer.echo(
            "Note: a local folder is not shared between hosts; processes on other machines need an s3:// "
            "IMAGEGATE_STORAGE_URL.",
            err=True,
        )


@storage_app.command("migrate")
def migrate_files(
    to: Annotated[str, typer.Option("--to", help="The store to copy to: s3://bucket/prefix?endpoint=…&region=…")],
    config: ConfigOption = None,
) -> None:
    """Copy every file of the configured store to another (idempotent: a rerun copies only what is missing)."""
    from imagegate.storage import storage_at, storage_for
    from imagegate.storage.location import parse_storage_url
    from imagegate.storage.migrate import migrate

    settings = load(config)
    try:
        location = parse_storage_url(to)
    except ValueError as error:
        typer.echo(f"Error: --to: {error}", err=True)
        raise typer.Exit(2) from None
    if location is None:
        typer.echo("Error: --to needs a store's URL (s3://bucket/prefix?… or file:///path).", err=True)
        raise typer.Exit(2)
    source = _opened(lambda: storage_for(settings))
    target = _opened(lambda: storage_at(location))
    if source.describe() == target.describe():
        typer.echo(f"Error: --to names the configured store itself ({source.describe()}).", err=True)
        raise typer.Exit(2)
    typer.echo(f"Copying from {source.describe()} to {target.describe()} …")
    try:
        report = asyncio.run(migrate(source, target))
    except ImagegateError as error:
        typer.echo(f"Error: {error.message} (the log line above says why); rerun to resume.", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"Copied {report.copied} file(s) ({report.copied_bytes} bytes); {report.present} already there"
        + (f"; {report.vanished} deleted meanwhile" if report.vanished else "")
        + (f"; {len(report.failed)} failed" if report.failed else "")
        + "."
    )
    for problem in report.failed:
        typer.echo(f"Could not copy {problem}", err=True)
    if report.failed:
        typer.echo("Rerun the same command to copy what is missing.", err=True)
        raise typer.Exit(1)
    typer.echo(f"Now set IMAGEGATE_STORAGE_URL={to} and restart every ImageGate process.")


def _opened(make: Callable[[], Storage]) -> Storage:
    """The store, or a configuration error and exit code 2 (an unreadable *_FILE, obstore missing)."""
    try:
        return make()
    except ValueError as error:
        typer.echo(f"Configuration error: {error}", err=True)
        raise typer.Exit(2) from None
