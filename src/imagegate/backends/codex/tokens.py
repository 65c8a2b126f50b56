"""What an account's auth.json says about its login, read only (Codex rotates the tokens in it itself).

Never a token leaves this module: only a fingerprint of the refresh token, the account id's first characters,
and the age of the last refresh. File work: call these in a thread.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

AUTH_FILE = "auth.json"
AMBER_DAYS, RED_DAYS = 7, 10  # refresh tokens live about ten days


@dataclass(frozen=True)
class TokenHealth:
    """The login's health as the admin page shows it."""

    account_id: str | None  # first 8 characters only
    last_refresh: datetime | None
    age_days: float | None
    colour: str  # green, amber, red, or unknown
    fingerprint: str | None


def read_auth(home: Path) -> dict[str, Any]:
    """auth.json as a dict ({} when missing or unreadable)."""
    try:
        data = json.loads((home / AUTH_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _tokens(auth: dict[str, Any]) -> dict[str, Any]:
    tokens = auth.get("tokens")
    return tokens if isinstance(tokens, dict) else {}


def access_token(home: Path) -> str | None:
    """The access token to read the usage endpoint with."""
    token = _tokens(read_auth(home)).get("access_token")
    return token if isinstance(token, str) and token else None


def fingerprint(home: Path) -> str | None:
    """A short sha256 of the refresh token: shows whether it rotated, never what it is."""
    token = _tokens(read_auth(home)).get("refresh_token")
    if not isinstance(token, str) or not token:
        return None
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def health(home: Path, now: datetime) -> TokenHealth:
    """Token age from last_refresh (green under 7 days, amber under 10, red after), account id prefix."""
    auth = read_auth(home)
    account = _tokens(auth).get("account_id")
    refreshed = _parse_time(auth.get("last_refresh"))
    age = (now - refreshed).total_seconds() / 86_400 if refreshed else None
    return TokenHealth(
        account_id=account[:8] if isinstance(account, str) and account else None,
        last_refresh=refreshed,
        age_days=age,
        colour=age_colour(age),
        fingerprint=fingerprint(home),
    )


def age_colour(age_days: float | None) -> str:
    """green under 7 days, amber under 10, red after; unknown without a last_refresh."""
    if age_days is None:
        return "unknown"
    return "green" if age_days < AMBER_DAYS else "amber" if age_days < RED_DAYS else "red"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
