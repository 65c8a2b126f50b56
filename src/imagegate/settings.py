"""One Settings object: IMAGEGATE_* environment, .env, an optional TOML file and *_FILE secrets."""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from imagegate.storage.location import S3Location, parse_storage_url

ENV_PREFIX = "IMAGEGATE_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"


class BackendConfig(BaseModel):
    """One configured backend: which plugin type runs it, how many jobs at once, its own options."""

    model_config = {"extra": "forbid"}

    type: str = Field(description="Backend plugin: a registered name (demo, …) or 'package.module:Class'.")
    concurrency: int = Field(default=2, ge=1, le=10_000)
    options: dict[str, Any] = Field(default_factory=dict)


class ModelPrice(BaseModel):
    """What one model costs, in dollars per million tokens of each kind (an estimate for the spend pages)."""

    model_config = {"extra": "forbid"}

    input_text: float = Field(default=0.0, ge=0)
    input_image: float = Field(default=0.0, ge=0)
    output_image: float = Field(default=0.0, ge=0)


def default_prices() -> dict[str, ModelPrice]:
    """The price table used when IMAGEGATE_PRICES is not set."""
    # OpenAI's published image-model prices as of 2025-10; estimates, to be checked against the price page.
    return {
        "gpt-image-1": ModelPrice(input_text=5.0, input_image=10.0, output_image=40.0),
        "gpt-image-1-mini": ModelPrice(input_text=2.0, input_image=2.5, output_image=8.0),
    }


def _default_backends() -> dict[str, BackendConfig]:
    return {"demo": BackendConfig(type="demo", concurrency=4)}


class Settings(BaseSettings):
    """Every knob ImageGate has; documented one by one in docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # Where things live.
    data_dir: Path = Path("data")
    database_url: str = ""
    public_base_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    auto_migrate: bool = True
    root_path: str = ""
    # Proxies whose X-Forwarded-For/-Proto are believed (comma-separated IPs or networks, or *); none by default.
    forwarded_allow_ips: str = ""

    # Backends and routing.
    backends: dict[str, BackendConfig] = Field(default_factory=_default_backends)
    models: dict[str, str] = Field(default_factory=lambda: {"demo": "demo"})
    default_model: str = "demo"
    # Dollars per million tokens, by the model name a backend reports usage under.
    prices: dict[str, ModelPrice] = Field(default_factory=default_prices)

    # Queue and scheduler.
    run_scheduler: bool = True
    queue_max_size: int = Field(default=1000, ge=1)
    wait_timeout_seconds: float = Field(default=120.0, ge=0)
    openai_wait_timeout_seconds: float = Field(default=600.0, gt=0)
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    worker_heartbeat_seconds: float = Field(default=3.0, gt=0)
    worker_lease_seconds: float = Field(default=15.0, gt=0)
    # Jobs of each backend one worker process runs at once; None: the backend's limit over the live workers.
    worker_slots: int | None = Field(default=None, ge=1)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    interrupted_jobs: Literal["retry", "fail"] = "retry"
    job_log_max_bytes: int = Field(default=64 * 1024, ge=1024)
    # A verified key is reused this long per process; a change made elsewhere is seen within it (hence ≤ 1 s).
    key_cache_seconds: float = Field(default=0.5, ge=0, le=1)

    # Request limits.
    max_prompt_chars: int = Field(default=32_000, ge=1)
    max_images_per_job: int = Field(default=10, ge=1, le=100)
    max_image_side: int = Field(default=4096, ge=16)
    max_reference_images: int = Field(default=16, ge=0, le=16)
    max_reference_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Pixels, read from each header before anything is decoded (a decoded pixel takes 4 bytes of memory).
    max_input_pixels: int = Field(default=4096 * 4096, ge=256, le=64 * 1024 * 1024)
    max_request_pixels: int = Field(default=2 * 4096 * 4096, ge=256)
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    # Connections (imagegate serve).
    http_header_timeout_seconds: float = Field(default=30.0, gt=0)
    http_body_timeout_seconds: float = Field(default=60.0, gt=0)
    http_keepalive_seconds: int = Field(default=5, ge=1)
    max_connections: int = Field(default=2000, ge=1)

    # Idempotency.
    idempotency_ttl_hours: float = Field(default=24.0, gt=0)

    # Storage: where image bytes live ("" for <data_dir>/files; file:///path or s3://bucket/prefix?endpoint=…).
    storage_url: str = ""
    # Downloads of an s3:// store answer a redirect to a presigned URL that lives this long.
    storage_presign: bool = False
    storage_presign_seconds: int = Field(default=300, ge=1, le=7 * 24 * 3600)

    # Retention.
    retention_days: float = Field(default=7.0, gt=0)
    cleanup_interval_seconds: float = Field(default=3600.0, gt=0)
    orphan_grace_seconds: float = Field(default=3600.0, ge=0)

    # Webhooks.
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_response_max_bytes: int = Field(default=64 * 1024, ge=1024)
    webhook_retry_initial_seconds: float = Field(default=10.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_retry_hours: float = Field(default=24.0, gt=0)
    webhook_concurrency: int = Field(default=8, ge=1, le=256)

    # MCP.
    mcp_inline_max_bytes: int = Field(default=1024 * 1024, ge=1024)
    mcp_wait_seconds: float = Field(default=120.0, ge=0, le=3600)

    # Secrets.
    admin_password: SecretStr | None = None

    # Admin UI.
    admin_session_hours: float = Field(default=12.0, gt=0)
    admin_login_max_failures: int = Field(default=5, ge=1)
    admin_login_window_seconds: float = Field(default=900.0, gt=0)

    # Logging and metrics.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    metrics_enabled: bool = True
    metrics_token: SecretStr | None = None
    metrics_dir: Path | None = None
    # Who may scrape /metrics without the token: addresses or networks, comma-separated; "" for nobody.
    metrics_allow_ips: str = "127.0.0.1,::1"
    api_docs_enabled: bool = True

    # The openai-image-gen surface: its own listener, and the key its keyless clients act as.
    oig_listen: str | None = None
    oig_anonymous_key: str | None = None

    @field_validator("public_base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else None

    @field_validator("root_path")
    @classmethod
    def _normalise_root_path(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        return value if not value or value.startswith("/") else "/" + value

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str) -> str:
        parse_storage_url(value)  # StorageUrlError names the setting and what is wrong
        return value.strip()

    @field_validator("oig_listen")
    @classmethod
    def _check_listen(cls, value: str | None) -> str | None:
        if value:
            split_listen(value)
        return value or None

    @field_validator("oig_anonymous_key")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @property
    def oig_address(self) -> tuple[str, int] | None:
        """IMAGEGATE_OIG_LISTEN as (host, port), or None when the second listener is off."""
        return split_listen(self.oig_listen) if self.oig_listen else None

    @field_validator("metrics_allow_ips")
    @classmethod
    def _check_networks(cls, value: str) -> str:
        for item in value.split(","):
            if item.strip():
                try:
                    ipaddress.ip_network(item.strip(), strict=False)
                except ValueError:
                    raise ValueError(f"{item.strip()!r} is not an IP address or network") from None
        return value

    def metrics_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The networks of metrics_allow_ips."""
        return [ipaddress.ip_network(i.strip(), strict=False) for i in self.metrics_allow_ips.split(",") if i.strip()]

    @model_validator(mode="after")
    def _check_routing(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'imagegate.db'}"
        for model, backend in self.models.items():
            if backend not in self.backends:
                raise ValueError(f"model {model!r} routes to backend {backend!r}, which is not configured")
        if self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not one of the routed models")
        if self.storage_presign and not isinstance(parse_storage_url(self.storage_url), S3Location):
            raise ValueError("IMAGEGATE_STORAGE_PRESIGN needs an s3:// IMAGEGATE_STORAGE_URL (local files have no URL)")
        if self.oig_address is not None and self.oig_address[1] == self.port:
            raise ValueError(f"oig_listen uses port {self.port}, the main listener's port; give it its own port")
        return self

    @property
    def is_sqlite(self) -> bool:
        """True when the database is SQLite (embedded mode)."""
        return self.database_url.startswith("sqlite")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            FileVariableSource(settings_cls),
            dotenv_settings,
        ]
        toml_file = settings_cls.model_config.get("toml_file")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


class FileVariableSource(PydanticBaseSettingsSource):
    """Reads IMAGEGATE_<NAME>_FILE: the setting's value is that file's content (Docker secrets)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        path = os.environ.get(f"{ENV_PREFIX}{field_name.upper()}_FILE")
        if not path:
            return None, field_name, False
        try:
            value = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"{ENV_PREFIX}{field_name.upper()}_FILE: cannot read {path}: {exc}") from exc
        return value, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


def split_listen(value: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[IPv6]:PORT') as (host, port); ValueError saying what is wrong."""
    host, sep, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (for example 127.0.0.1:5000)")
    return host, int(port)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build Settings from the environment, .env and the TOML file (argument or IMAGEGATE_CONFIG)."""
    path = config_file or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    try:
        if path is None:
            return Settings(**overrides)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        check_toml_keys(path)

        class FileSettings(Settings):
            model_config = SettingsConfigDict(toml_file=path)

        return FileSettings(**overrides)
    except SettingsError as exc:
        raise ValueError(_explain_unparsable(exc)) from None


def check_toml_keys(path: Path) -> None:
    """A key of the TOML file that is not a setting is an error naming it (a typo would be ignored silently)."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    known = list(Settings.model_fields)
    for key in document:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "; the settings are listed in docs/configuration.md"
            raise ValueError(f"{path}: unknown setting {key!r}{hint}")


def _explain_unparsable(exc: SettingsError) -> str:
    """Name the variable whose value could not be parsed, and say what is wrong with its JSON."""
    for name in Settings.model_fields:
        variable = ENV_PREFIX + name.upper()
        if f'"{name}"' in str(exc) and variable in os.environ:
            try:
                json.loads(os.environ[variable])
            except ValueError as problem:
                return f"{variable} is not valid JSON: {problem}"
            return f"{variable}: {exc}"
    return str(exc)
