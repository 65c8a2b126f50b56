"""`imagegate import …`: bring an existing installation of another service over."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from imagegate.cli.common import ConfigOption, load, sessions_for
from imagegate.errors import ImagegateError

import_app = typer.Typer(help="Bring an existing installation of another service over.", no_args_is_help=True)


@import_app.command("codex-image-service")
def codex_image_service(
    database: Annotated[Path, typer.Argument(help="Its SQLite database file.")],
    files: Annotated[
        Path | None,
        typer.Option("--files", help="Its static/generated/ folder: bring the history and its images too."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be imported; change nothing.")] = False,
    config: ConfigOption = None,
) -> None:
    """Import its API keys (their secrets keep working) and, with --files, its history; a rerun changes nothing."""
    from imagegate.imports.codex_image_service import run_import
    from imagegate.storage import storage_for

    settings = load(config)
    if files is not None and not files.is_dir():
        typer.echo(f"Error: --files {files} is not a folder.", err=True)
        raise typer.Exit(2)

    async def main() -> None:
        async with sessions_for(settings) as sessions:
            report = await run_import(
                sessions=sessions,
                storage=storage_for(settings),
                settings=settings,
                database=database,
                files=files,
                dry_run=dry_run,
            )
        for line in report.lines:
            typer.echo(line)
        verb = "Would import" if dry_run else "Imported"
        typer.echo(
            f"{verb} {report.keys_imported} key(s) ({report.keys_present} already here), {report.jobs_imported} "
            f"job(s) ({report.jobs_present} already here) with {report.images_imported} image(s)"
            + (f"; {report.files_missing} file(s) missing" if report.files_missing else "")
            + "."
        )

    try:
        asyncio.run(main())
    except ImagegateError as error:
        typer.echo(f"Error: {error.message}", err=True)
        raise typer.Exit(1) from None
