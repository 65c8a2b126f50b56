"""The admin key form: its fields read into limits, and the values it shows (a key's, or what was posted)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import FormData

from imagegate.admin.web import form_value
from imagegate.db import utcnow
from imagegate.errors import InvalidRequest
from imagegate.keys import service as keys
from imagegate.keys.models import SCOPES, ApiKey
from imagegate.keys.service import KeyLimits

# The form's text fields, by name (the scopes are checkboxes).
TEXT_FIELDS = (
    "name",
    "expires",
    "models",
    "rate_limit",
    "daily_quota",
    "monthly_quota",
    "max_concurrent",
    "monthly_budget_usd",
)
KeyFields = dict[str, Any]


def blank_fields() -> KeyFields:
    """A new key's form: every field empty, every scope ticked."""
    return {**dict.fromkeys(TEXT_FIELDS, ""), "scopes": list(SCOPES)}


def fields_of(key: ApiKey) -> KeyFields:
    """The edit form filled in with the key as stored."""

    def shown(value: float | None) -> str:
        return "" if value is None else str(value)

    return {
        "name": key.name,
        "expires": key.expires_at.date().isoformat() if key.expires_at else "",
        "models": ", ".join(key.allowed_models or []),
        "scopes": list(key.scopes),
        "rate_limit": shown(key.rate_limit_per_minute),
        "daily_quota": shown(key.daily_image_quota),
        "monthly_quota": shown(key.monthly_image_quota),
        "max_concurrent": shown(key.max_concurrent_jobs),
        "monthly_budget_usd": shown(key.monthly_budget_usd),
    }


def fields_from(form: FormData) -> KeyFields:
    """What the operator posted, to show again when it is refused."""
    return {
        **{name: form_value(form, name) for name in TEXT_FIELDS},
        "scopes": [scope for scope in form.getlist("scopes") if isinstance(scope, str)],
    }


def limits_from(form: FormData) -> KeyLimits:
    """The limits the form asks for; InvalidRequest naming the field that is not a valid value."""

    def number(name: str) -> int | None:
        value = form_value(form, name)
        if not value:
            return None
        number = keys.parse_limit(value)
        if number is None:
            raise InvalidRequest(
                f"{name.replace('_', ' ')} must be a whole number of at least 1 (at most {keys.MAX_LIMIT}), or empty.",
                param=name,
            )
        return number

    models = [m.strip() for m in form_value(form, "models").split(",") if m.strip()]
    return KeyLimits(
        allowed_models=models or None,
        scopes=[s for s in form.getlist("scopes") if isinstance(s, str)],
        rate_limit_per_minute=number("rate_limit"),
        daily_image_quota=number("daily_quota"),
        monthly_image_quota=number("monthly_quota"),
        max_concurrent_jobs=number("max_concurrent"),
        monthly_budget_usd=_budget_from(form),
    )


def _budget_from(form: FormData) -> float | None:
    """The monthly budget field: dollars above 0, or empty for none."""
    value = form_value(form, "monthly_budget_usd")
    if not value:
        return None
    dollars = keys.parse_budget(value)
    if dollars is None:
        raise InvalidRequest(
            f"monthly budget must be dollars above 0 (at most {keys.MAX_LIMIT}), like 12.50, or empty.",
            param="monthly_budget_usd",
        )
    return dollars


def expiry_from(form: FormData) -> datetime | None:
    """The expiry date field: None (never) when empty; InvalidRequest for a bad or past date."""
    expires = form_value(form, "expires")
    try:
        expires_at = datetime.fromisoformat(expires).replace(tzinfo=UTC) if expires else None
    except ValueError:
        raise InvalidRequest(f"{expires!r} is not a date; use YYYY-MM-DD.", param="expires") from None
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidRequest("The expiry date is in the past.", param="expires")
    return expires_at
