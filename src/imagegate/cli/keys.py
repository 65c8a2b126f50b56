"""`imagegate keys …` and `imagegate audit`: issue, limit, rotate and retire API keys; read the audit log."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import typer

from imagegate.cli.common import ConfigOption, load, parse_duration, parse_expiry, run_db, short
from imagegate.db import utcnow
from imagegate.keys import audit
from imagegate.keys import service as keys
from imagegate.keys.models import ApiKey
from imagegate.keys.service import UNSET, KeyLimits
from imagegate.settings import Settings

keys_app = typer.Typer(help="Issue and manage API keys.", no_args_is_help=True)

LimitOption = Annotated[str | None, typer.Option(help="A number, or 'none' for no limit.")]
ModelsOption = Annotated[
    str | None, typer.Option("--models", help="Comma-separated models or backends this key may use; 'all' for any.")
]
ScopesOption = Annotated[str | None, typer.Option(help="Comma-separated: generate, edit, read, delete, vision.")]
BudgetOption = Annotated[str | None, typer.Option(help="Dollars of estimated spend a month (12.50), or 'none'.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table (for scripts).")]
# The options of `keys create` and `keys update` that set a key's limits, in the order --help shows them.
LIMIT_OPTIONS: dict[str, Any] = {
    "models": ModelsOption,
    "scopes": ScopesOption,
    "rate_limit": LimitOption,
    "daily_quota": LimitOption,
    "monthly_quota": LimitOption,
    "max_concurrent": LimitOption,
    "monthly_budget_usd": BudgetOption,
}


def with_limit_options(command: Callable[..., None]) -> Callable[..., None]:
    """The command with the limit options and --config after its own; it is given `settings` and `limits`.

    Typer reads a command's options from its signature, so the wrapper's signature is the command's own
    parameters, then the limit options, then --config.
    """
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name not in ("settings", "limits")]
    added = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=annotation)
        for name, annotation in {**LIMIT_OPTIONS, "config": ConfigOption}.items()
    ]
    parameters = [*own, *added]

    @functools.wraps(command)
    def wrapper(**given: Any) -> None:
        settings = load(given.pop("config"))
        options = {name: given.pop(name) for name in LIMIT_OPTIONS}
        command(**given, settings=settings, limits=_limits(settings=settings, **options))

    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
    return wrapper


def _limit(value: str | None, option: str) -> Any:
    if value is None:
        return UNSET
    if value.strip().lower() in ("none", "unlimited"):
        return None
    number = keys.parse_limit(value)
    if number is None:
        raise typer.BadParameter(f"{option} takes a whole number of at least 1 (at most {keys.MAX_LIMIT}), or 'none'")
    return number


def _list(value: str | None, *, everything: str | None = None) -> Any:
    if value is None:
        return UNSET
    if everything is not None and value.strip().lower() == everything:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _routed(models: Any, settings: Settings) -> Any:
    """The --models list, refusing a name that is neither a routed model nor a backend (it could never match)."""
    if isinstance(models, list):
        known = sorted({*settings.models, *settings.backends})
        for name in models:
            if name not in known:
                raise typer.BadParameter(f"{name!r} is not a routed model or backend; known: {', '.join(known)}")
    return models


def _budget(value: str | None) -> Any:
    if value is None:
        return UNSET
    if value.strip().lower() in ("none", "unlimited"):
        return None
    dollars = keys.parse_budget(value)
    if dollars is None:
        raise typer.BadParameter(
            f"--monthly-budget-usd takes dollars above 0 (at most {keys.MAX_LIMIT}), like 12.50, or 'none'"
        )
    return dollars


def _limits(
    *,
    settings: Settings,
    models: str | None,
    scopes: str | None,
    rate_limit: str | None,
    daily_quota: str | None,
    monthly_quota: str | None,
    max_concurrent: str | None,
    monthly_budget_usd: str | None,
) -> KeyLimits:
    return KeyLimits(
        allowed_models=_routed(_list(models, everything="all"), settings),
        scopes=_list(scopes),
        rate_limit_per_minute=_limit(rate_limit, "--rate-limit"),
        daily_image_quota=_limit(daily_quota, "--daily-quota"),
        monthly_image_quota=_limit(monthly_quota, "--monthly-quota"),
        max_concurrent_jobs=_limit(max_concurrent, "--max-concurrent"),
        monthly_budget_usd=_budget(monthly_budget_usd),
    )


def describe(key: ApiKey) -> list[str]:
    """A key's settings as lines for people."""

    def limit(value: int | None, unit: str) -> str:
        return "unlimited" if value is None else f"{value} {unit}"

    return [
        f"handle:          {key.handle}",
        f"name:            {key.name}",
        f"status:          {_status(key)}",
        f"created:         {short(key.created_at)}",
        f"last used:       {short(key.last_used_at)}",
        f"expires:         {short(key.expires_at)}",
        f"models:          {', '.join(key.allowed_models) if key.allowed_models is not None else 'all'}",
        f"scopes:          {', '.join(key.scopes)}",
        f"rate limit:      {limit(key.rate_limit_per_minute, 'requests/minute')}",
        f"daily quota:     {limit(key.daily_image_quota, 'images')}",
        f"monthly quota:   {limit(key.monthly_image_quota, 'images')}",
        f"max concurrent:  {limit(key.max_concurrent_jobs, 'jobs')}",
        "monthly budget:  unlimited"
        if key.monthly_budget_usd is None
        else f"monthly budget:  ${key.monthly_budget_usd:,.2f} (estimated spend)",
        f"previous secret: valid until {short(key.previous_token_expires_at)}"
        if key.previous_token_hash
        else "previous secret: none",
    ]


def as_json(key: ApiKey) -> dict[str, Any]:
    """A key's settings for scripts (never a secret or a hash)."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "handle": key.handle,
        "name": key.name,
        "status": _status(key),
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
        "expires_at": iso(key.expires_at),
        "allowed_models": key.allowed_models,
        "scopes": key.scopes,
        "rate_limit_per_minute": key.rate_limit_per_minute,
        "daily_image_quota": key.daily_image_quota,
        "monthly_image_quota": key.monthly_image_quota,
        "max_concurrent_jobs": key.max_concurrent_jobs,
        "monthly_budget_usd": key.monthly_budget_usd,
        "previous_secret_valid_until": iso(key.previous_token_expires_at) if key.previous_token_hash else None,
    }


def _status(key: ApiKey) -> str:
    if not key.enabled:
        return "disabled"
    return "expired" if key.expires_at and key.expires_at <= utcnow() else "enabled"


@keys_app.command("create")
@with_limit_options
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    expires: Annotated[str | None, typer.Option(help="30d, 12h, 2w, or an ISO date.")] = None,
    *,
    settings: Settings,
    limits: KeyLimits,
) -> None:
    """Create a key and print it once."""
    expires_at = parse_expiry(expires) if expires else None
    key, token = run_db(
        settings, lambda s: keys.create_key(session=s, name=name, expires_at=expires_at, limits=limits, actor="cli")
    )
    typer.echo("\n".join(describe(key)))
    typer.echo(f"webhook secret:  {key.webhook_secret}  (signs this key's webhooks; `keys webhook-secret` shows it)")
    typer.echo("\nThe key is shown only this once; store it now:\n")
    typer.echo(token)


@keys_app.command("update")
@with_limit_options
def keys_update(
    handle: str,
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    expires: Annotated[str | None, typer.Option(help="30d, 12h, an ISO date, or 'never'.")] = None,
    *,
    settings: Settings,
    limits: KeyLimits,
) -> None:
    """Change a key's name, expiry or limits (options not given stay as they are)."""
    if name is not None:
        limits.name = name
    if expires is not None:
        limits.expires_at = None if expires.strip().lower() == "never" else parse_expiry(expires)
    if not limits.given():
        raise typer.BadParameter("nothing to change: give at least one option")
    key = run_db(settings, lambda s: keys.update_key(session=s, handle=handle, limits=limits, actor="cli"))
    typer.echo("\n".join(describe(key)))


@keys_app.command("rotate")
def keys_rotate(
    handle: str,
    grace: Annotated[str, typer.Option(help="How long the old secret keeps working: 0, 30m, 24h, 7d.")] = "24h",
    config: ConfigOption = None,
) -> None:
    """Issue a new secret for a key; the old one works for the grace period, then stops."""
    settings = load(config)
    period = parse_duration(grace)
    key, token = run_db(settings, lambda s: keys.rotate_key(session=s, handle=handle, grace=period, actor="cli"))
    until = f"until {key.previous_token_expires_at.isoformat()}" if key.previous_token_expires_at else "no longer"
    typer.echo(f"Rotated {key.handle}; the old secret works {until}.")
    typer.echo("The new key is shown only this once; store it now:\n")
    typer.echo(token)


@keys_app.command("webhook-secret")
def keys_webhook_secret(
    handle: str,
    rotate: Annotated[bool, typer.Option("--rotate", help="Replace it; the old one stops signing at once.")] = False,
    config: ConfigOption = None,
) -> None:
    """Print the secret that signs a key's webhooks (whsec_…), or a new one with --rotate."""
    secret = run_db(load(config), lambda s: keys.webhook_secret(session=s, handle=handle, rotate=rotate, actor="cli"))
    if rotate:
        typer.echo(f"Rotated the webhook secret of {handle}; webhooks sent from now on are signed with:", err=True)
    typer.echo(secret)


@keys_app.command("show")
def keys_show(handle: str, json_output: JsonOption = False, config: ConfigOption = None) -> None:
    """Show one key's settings and limits."""
    key = run_db(load(config), lambda s: keys.get_by_handle(session=s, handle=handle))
    typer.echo(json.dumps(as_json(key), indent=2) if json_output else "\n".join(describe(key)))


@keys_app.command("list")
def keys_list(json_output: JsonOption = False, config: ConfigOption = None) -> None:
    """List keys (handles, never secrets)."""
    rows = run_db(load(config), lambda s: keys.list_keys(session=s))
    if json_output:
        typer.echo(json.dumps([as_json(key) for key in rows], indent=2))
        return
    if not rows:
        typer.echo("No keys yet. Create one with: imagegate keys create NAME")
        return
    typer.echo(f"{'HANDLE':<18} {'STATUS':<9} {'CREATED':<20} {'LAST USED':<20} {'EXPIRES':<20} NAME")
    for key in rows:
        typer.echo(
            f"{key.handle:<18} {_status(key):<9} {short(key.created_at):<20} {short(key.last_used_at):<20} "
            f"{short(key.expires_at):<20} {key.name}"
        )


@keys_app.command("disable")
def keys_disable(handle: str, config: ConfigOption = None) -> None:
    """Disable a key: requests with it get 403 until it is enabled again."""
    run_db(load(config), lambda s: keys.set_enabled(session=s, handle=handle, enabled=False, actor="cli"))
    typer.echo(f"Disabled {handle}.")


@keys_app.command("enable")
def keys_enable(handle: str, config: ConfigOption = None) -> None:
    """Enable a disabled key."""
    run_db(load(config), lambda s: keys.set_enabled(session=s, handle=handle, enabled=True, actor="cli"))
    typer.echo(f"Enabled {handle}.")


@keys_app.command("delete")
def keys_delete(
    handle: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = None,
) -> None:
    """Delete a key for good (asks first; --yes for scripts); its jobs stay in the history."""
    settings = load(config)
    if not yes and not typer.confirm(
        f"Delete {handle} for good? Callers using it get 401 at once; `keys disable` can be undone", default=False
    ):
        typer.echo("Not deleted.", err=True)
        raise typer.Exit(1)
    run_db(settings, lambda s: keys.delete_key(session=s, handle=handle, actor="cli"))
    typer.echo(f"Deleted {handle}.")


def audit_command(
    handle: Annotated[str | None, typer.Option(help="Only this key.")] = None,
    action: Annotated[str | None, typer.Option(help="Only actions starting with this (key., refused.).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many events.")] = 50,
    json_output: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Show the audit log, newest first: key changes and refusals for limits."""
    rows = run_db(load(config), lambda s: audit.events(session=s, handle=handle, action=action, limit=limit))
    if json_output:
        events = [
            {"at": e.at.isoformat(), "actor": e.actor, "key": e.key_handle, "action": e.action, "detail": e.detail}
            for e in rows
        ]
        typer.echo(json.dumps(events, indent=2, default=str))
        return
    if not rows:
        typer.echo("No audit events.")
        return
    typer.echo(f"{'WHEN':<20} {'ACTOR':<6} {'KEY':<18} {'ACTION':<36} DETAIL")
    for event in rows:
        detail = ", ".join(f"{k}={v}" for k, v in event.detail.items() if v is not None)
        typer.echo(f"{short(event.at):<20} {event.actor:<6} {event.key_handle or '-':<18} {event.action:<36} {detail}")
