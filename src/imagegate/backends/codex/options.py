"""The Codex backend's options, and what of the server's environment an exec may see."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

USAGE_URL = "https://chatgpt.com/backend-api/wham/usage"
# What codex exec may see of our environment: never the admin password or provider keys.
PASSED_ENV = ("HOME", "PATH", "USER", "LOGNAME", "TMPDIR", "LANG", "LANGUAGE", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")
PASSED_ENV_PREFIXES = ("LC_",)
PROXY_ENV = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


class AccountOption(BaseModel):
    """A Codex login: a name for statistics and its CODEX_HOME folder."""

    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=100)
    home: Path


class CodexOptions(BaseModel):
    """Options of the Codex backend."""

    model_config = {"extra": "forbid"}

    executable: str = "codex"
    model: str | None = Field(default=None, description="Passed as -m; Codex's default when unset.")
    extra_args: list[str] = Field(default_factory=list)
    timeout_seconds: float = Field(default=600.0, gt=0)
    kill_grace_seconds: float = Field(default=10.0, ge=0)
    sandbox: Literal["workspace-write", "read-only", "bypass"] = "workspace-write"
    accounts: list[AccountOption] = Field(default_factory=list)
    dispatch: Literal["round-robin", "primary-first"] = "primary-first"
    max_output_bytes: int = Field(default=64 * 1024, ge=1024)
    cache_max_age_hours: float = Field(default=48.0, gt=0)
    env: dict[str, str] = Field(default_factory=dict, description="More environment for codex exec.")
    usage_url: str | None = Field(default=USAGE_URL, description="The ChatGPT usage endpoint; None: quota unknown.")
    min_quota_percent: float = Field(default=5.0, ge=0, le=100)
    keepalive_prompt: str = "Reply with the single word OK."
    keepalive_idle_hours: float = Field(default=20.0, gt=0)
