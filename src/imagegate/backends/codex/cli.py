"""`imagegate codex …`: the token audit log and the keep-alive, contributed through the CLI hook."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from imagegate.backends.models import BackendEvent
from imagegate.backends.registry import BackendSet
from imagegate.settings import Settings

if TYPE_CHECKING:
    from imagegate.backends.codex import CodexBackend

# Made before the CLI's helpers are imported: importing them loads the imagegate.cli package, which asks every
# backend for its commands, so when this module is loaded first the app must already exist to be handed over.
codex_app = typer.Typer(help="The Codex backend's accounts: token audit and keep-alive.", no_args_is_help=True)

from imagegate.cli.common import ConfigOption, load, sessions_for, short  # noqa: E402


@contextlib.asynccontextmanager
async def codex_backends(settings: Settings) -> AsyncIterator[list[CodexBackend]]:
    """The configured Codex backends, started on the database."""
    from imagegate.backends.codex import CodexBackend

    backends = BackendSet.from_settings(settings)
    try:
        async with sessions_for(settings) as sessions:
            await backends.start(sessions)
            found = [b for b in backends.backends.values() if isinstance(b, CodexBackend)]
            if not found:
                typer.echo("No Codex backend is configured.", err=True)
                raise typer.Exit(1)
            yield found
    finally:
        await backends.aclose()


@codex_app.command("tokens")
def tokens_command(
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option(help="How many entries per backend.", min=1)] = 50,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table (for scripts).")] = False,
) -> None:
    """The token audit log: refresh-token fingerprints (never tokens) when they rotated or a run was killed."""
    settings = load(config)

    async def main() -> None:
        listed: dict[str, list[dict[str, Any]]] = {}
        async with codex_backends(settings) as found:
            for backend in found:
                assert backend.store is not None
                events = await backend.store.events("token", limit=limit)
                listed[backend.name] = [_token_event(event) for event in events]
                if json_output:
                    continue
                typer.echo(f"{backend.name}: {len(events)} token event(s)")
                for event in events:
                    data = event.data
                    typer.echo(
                        f"  {short(event.at)}  {event.subject:<16} {data.get('before') or '-'} -> "
                        f"{data.get('after') or '-'}  {data.get('reason', '')}  {event.job_id or '-'}"
                    )
        if json_output:
            typer.echo(json.dumps(listed, indent=2))

    asyncio.run(main())


def _token_event(event: BackendEvent) -> dict[str, Any]:
    data = event.data
    return {
        "at": event.at.isoformat(),
        "account": event.subject,
        "before": data.get("before"),
        "after": data.get("after"),
        "reason": data.get("reason"),
        "job_id": event.job_id,
    }


@codex_app.command("keepalive")
def keepalive_command(
    config: ConfigOption = None,
    idle_hours: Annotated[float | None, typer.Option(help="Touch accounts unused this long (default: option).")] = None,
) -> None:
    """Touch each idle account with a tiny exec under its lock (run it daily from a timer)."""
    settings = load(config)

    async def main() -> int:
        failed = 0
        async with codex_backends(settings) as found:
            for backend in found:
                for account, outcome in await backend.keepalive(idle_hours):
                    typer.echo(f"{backend.name}/{account}: {outcome}")
                    failed += outcome.startswith(("failed", "timed out"))
        return failed

    if asyncio.run(main()):
        raise typer.Exit(1)
