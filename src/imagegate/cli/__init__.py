"""The imagegate command: serve, worker, db upgrade, keys, jobs, audit, cleanup, generate, describe, import,
storage."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from imagegate.cli.common import (
    ConfigOption,
    announce_database,
    configure_logging,
    load,
    parse_expiry,
    prepare_metrics,
    sessions_for,
)
from imagegate.cli.lazy import LazyGroup

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

    from imagegate.metrics import Metrics
    from imagegate.settings import Settings

# keys, jobs, import, storage, audit and the backends' groups are imported when used (cli/lazy.py).
app = typer.Typer(help="ImageGate: a self-hosted image-generation gateway.", no_args_is_help=True, cls=LazyGroup)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
admin_app = typer.Typer(help="The admin web UI's login.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")

__all__ = ["app", "main", "parse_expiry"]


def _print_version(value: bool) -> None:
    if value:
        from imagegate import __version__

        typer.echo(f"imagegate {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """ImageGate: a self-hosted image-generation gateway."""


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Server processes sharing the port and the database; each also runs job workers on the one queue.",
        ),
    ] = 1,
) -> None:
    """Run the HTTP service (migrating the database first) with its workers."""
    settings = load(config, host=host, port=port)
    configure_logging(settings)
    prepare_metrics(settings)
    from imagegate.metrics import follow_multiprocess_setting

    follow_multiprocess_setting()  # this process's counters go to the shared files, whatever was imported first
    if workers == 1:
        code = _serve_one(settings, None, lambda: _say_listening(settings))
    else:
        code = _serve_many(settings, workers)
    if code:
        raise typer.Exit(code)


def _serve_many(settings: Settings, workers: int) -> int:
    """`workers` forked servers on sockets bound here; the first migrates and announces, the rest follow it."""
    from imagegate.serving import run_processes

    try:
        sockets = [_bind(settings, settings.host, settings.port)]
        if settings.oig_address is not None:
            sockets.append(_bind(settings, *settings.oig_address))
    except OSError as error:
        typer.echo(f"Error: cannot listen on {settings.host}:{settings.port}: {error.strerror}", err=True)
        return 3
    followers = settings.model_copy(update={"auto_migrate": False})

    def child(index: int, ready: Callable[[], None]) -> int:
        if index:
            return _serve_one(followers, sockets, None)

        def listening() -> None:
            _say_listening(settings, workers)
            ready()

        return _serve_one(settings, sockets, listening)

    return run_processes(workers, child)


def _bind(settings: Settings, host: str, port: int) -> socket.socket:
    import uvicorn

    from imagegate.serving import listen_backlog

    return uvicorn.Config(
        "imagegate.app:create_app", host=host, port=port, backlog=listen_backlog(settings)
    ).bind_socket()


def _serve_one(settings: Settings, sockets: list[socket.socket] | None, on_listening: Callable[[], None] | None) -> int:
    """One uvicorn server of the app; on the given sockets, or binding its own. 3 when it could not start."""
    import uvicorn

    from imagegate.app import create_app
    from imagegate.cli.recording import RecordingServer
    from imagegate.metrics import Metrics
    from imagegate.serving import DrainingServer, shutdown_options

    metrics = Metrics()  # one set for both listeners
    application = create_app(settings, metrics=metrics)
    listening = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        root_path=settings.root_path,
        # Forwarded headers only from the proxies the operator named: uvicorn would trust loopback by default.
        proxy_headers=bool(settings.forwarded_allow_ips.strip()),
        forwarded_allow_ips=settings.forwarded_allow_ips.strip() or None,
        access_log=False,  # the app logs each request itself, with its request id
        log_config=None,  # keep configure_logging's handler: uvicorn's lines are escaped and formatted alike
        **shutdown_options(settings, metrics),
    )
    if settings.oig_address is not None:
        sockets = _with_oig_listener(listening, application, settings, metrics, sockets)
    # The process that announces also records where it really listens, for the CLI's links.
    server = (
        RecordingServer(listening, application, settings, on_listening)
        if on_listening is not None
        else DrainingServer(listening, application)
    )
    server.run(sockets=sockets)
    return 0 if server.started else 3


def _with_oig_listener(
    config: uvicorn.Config,
    application: FastAPI,
    settings: Settings,
    metrics: Metrics,
    sockets: list[socket.socket] | None,
) -> list[socket.socket]:
    """With IMAGEGATE_OIG_LISTEN: both listeners' sockets, and the app that tells their requests apart."""
    address = settings.oig_address
    assert address is not None
    from imagegate.api.legacy_listener import ListenerDispatch, create_oig_app

    oig = create_oig_app(application, settings=settings, metrics=metrics)
    config.app = ListenerDispatch(application, oig, address[1])
    return sockets or [_bind(settings, settings.host, settings.port), _bind(settings, *address)]


def _say_listening(settings: Settings, workers: int = 1) -> None:
    """Printed once the ports are bound and the app has started: a request sent now is answered."""
    processes = f" with {workers} server processes" if workers > 1 else ""
    typer.echo(
        f"ImageGate listening on http://{settings.host}:{settings.port}{processes} (data in {settings.data_dir})"
    )
    if settings.oig_address is not None:
        host, port = settings.oig_address
        typer.echo(f"openai-image-gen API listening on http://{host}:{port}")


@app.command()
def worker(config: ConfigOption = None) -> None:
    """Run only the job workers (no HTTP), e.g. beside API processes on one PostgreSQL database."""
    settings = load(config, run_scheduler=True)
    configure_logging(settings)
    prepare_metrics(settings)
    from imagegate.metrics import follow_multiprocess_setting

    follow_multiprocess_setting()  # this process's counters go to the shared files, whatever was imported first
    from imagegate.app import create_app, running

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


@app.command("mcp")
def mcp(
    url: Annotated[
        str, typer.Option(envvar="IMAGEGATE_URL", help="The running ImageGate, e.g. http://127.0.0.1:8000.")
    ],
    key: Annotated[str, typer.Option(envvar="IMAGEGATE_API_KEY", help="The API key the tools use (ig_…).")],
    inline_max_bytes: Annotated[
        int,
        typer.Option(
            envvar="IMAGEGATE_MCP_INLINE_MAX_BYTES", min=1024, help="Larger images come as a link and a preview."
        ),
    ] = 1024 * 1024,
    wait: Annotated[
        float,
        typer.Option(
            envvar="IMAGEGATE_MCP_WAIT_SECONDS", min=0, max=3600, help="Seconds a tool waits before returning the id."
        ),
    ] = 120.0,
) -> None:
    """Run the MCP tools over stdio (for MCP clients that launch a command), calling ImageGate over HTTP."""
    from imagegate.mcp_server.stdio import serve_stdio

    asyncio.run(serve_stdio(url=url, key=key, inline_max_bytes=inline_max_bytes, wait_seconds=wait))


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply database migrations up to the newest schema."""
    from imagegate.migrations import upgrade

    settings = load(config)
    announce_database(settings, must_exist=False)
    upgrade(settings.database_url, prices=settings.prices)
    typer.echo("Database is up to date.")


@admin_app.command("set-password")
def admin_set_password(
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    config: ConfigOption = None,
) -> None:
    """Set the admin password (only its argon2 hash is stored); every admin session is logged out."""
    from imagegate.admin import service as admin_service

    settings = load(config)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("New admin password", hide_input=True, confirmation_prompt=True)

    async def main() -> None:
        async with sessions_for(settings) as sessions:
            await admin_service.set_password(sessions=sessions, password=password, actor="cli")

    try:
        asyncio.run(main())
    except ValueError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo("Admin password changed; every admin session was logged out.")
    if settings.admin_password is not None:
        typer.echo("Note: IMAGEGATE_ADMIN_PASSWORD is set and will replace this at the next start.", err=True)


@app.command()
def cleanup(config: ConfigOption = None) -> None:
    """Expire due jobs, remove orphan files and backends' stale caches now."""
    from imagegate.backends.registry import BackendSet
    from imagegate.retention import sweep
    from imagegate.storage import storage_for

    settings = load(config)
    try:
        backends: BackendSet | None = BackendSet.from_settings(settings)
    except Exception as exc:  # e.g. a provider key missing in this shell: files can still be swept
        typer.echo(f"Backends not loaded ({exc}); their caches are skipped this time.", err=True)
        backends = None

    async def main() -> None:
        try:
            async with sessions_for(settings) as sessions:
                if backends is not None:
                    await backends.start(sessions)
                report = await sweep(
                    sessions=sessions, storage=storage_for(settings), settings=settings, backends=backends
                )
        finally:
            if backends is not None:
                await backends.aclose()
        typer.echo(
            f"Expired {report.expired_jobs} job(s); removed {report.deleted_files} file(s), "
            f"{report.orphan_files} orphan file(s) and {report.backend_items} backend cache item(s)."
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
    force: Annotated[bool, typer.Option("--force", help="Overwrite output files that exist.")] = False,
    progress: Annotated[
        bool | None,
        typer.Option("--progress/--no-progress", help="Show the job's status on stderr (default: on a terminal)."),
    ] = None,
) -> None:
    """Generate images on a running server and save them (a client: needs --key or IMAGEGATE_API_KEY)."""
    from imagegate.cli.progress import ProgressLine
    from imagegate.client import ClientError, generate_to_files, taken_paths

    if not key:
        typer.echo("An API key is needed: --key ig_… or IMAGEGATE_API_KEY.", err=True)
        raise typer.Exit(2)
    if not force and (taken := taken_paths(output, count)):
        typer.echo(f"Error: {', '.join(map(str, taken))} already exists; pass --force to overwrite.", err=True)
        raise typer.Exit(1)
    fmt = output_format or (output.suffix.lstrip(".").lower().replace("jpg", "jpeg") or "png")
    body = {"prompt": prompt, "size": size, "quality": quality, "count": count, "output_format": fmt}
    if model:
        body["model"] = model
    terminal = sys.stderr.isatty()
    shown = ProgressLine(sys.stderr, terminal=terminal) if (terminal if progress is None else progress) else None
    try:
        saved = asyncio.run(
            generate_to_files(url=url, key=key, body=body, output=output, timeout=timeout, progress=shown)
        )
    except ClientError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    for path in saved:
        typer.echo(str(path))


@app.command()
def describe(
    images: Annotated[
        list[Path], typer.Argument(help="Image files to ask about (1 to 16).", exists=True, dir_okay=False)
    ],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What to ask about the images.")],
    url: Annotated[str, typer.Option(envvar="IMAGEGATE_URL", help="The server.")] = "http://127.0.0.1:8000",
    key: Annotated[str | None, typer.Option(envvar="IMAGEGATE_API_KEY", help="Your API key.")] = None,
    model: Annotated[str | None, typer.Option(help="A model whose backend can read images.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 600.0,
) -> None:
    """Ask a running server's vision endpoint about images and print the answer (a client: needs a key)."""
    from imagegate.client import ClientError, describe_images

    if not key:
        typer.echo("An API key is needed: --key ig_… or IMAGEGATE_API_KEY.", err=True)
        raise typer.Exit(2)
    try:
        answer = asyncio.run(
            describe_images(url=url, key=key, prompt=prompt, images=images, model=model, timeout=timeout)
        )
    except ClientError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(answer)


def main() -> None:
    """Console script entry point."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
