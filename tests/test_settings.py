"""Settings sources, validation, and the rule that every setting is documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from imagegate.settings import Settings, load_settings

DOCS = Path(__file__).parent.parent / "docs" / "configuration.md"


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text()
    missing = [name for name in Settings.model_fields if f"`IMAGEGATE_{name.upper()}`" not in text]
    assert missing == [], f"document these in docs/configuration.md: {missing}"


def test_defaults_are_embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.database_url == "sqlite+aiosqlite:///data/imagegate.db"
    assert settings.default_model == "demo"
    assert settings.backends["demo"].type == "demo"
    assert settings.admin_password is None


def test_environment_and_json_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMAGEGATE_PORT", "9001")
    monkeypatch.setenv("IMAGEGATE_BACKENDS", '{"slow": {"type": "demo", "concurrency": 7}}')
    monkeypatch.setenv("IMAGEGATE_MODELS", '{"slow-model": "slow"}')
    monkeypatch.setenv("IMAGEGATE_DEFAULT_MODEL", "slow-model")
    settings = Settings()
    assert settings.port == 9001
    assert settings.backends["slow"].concurrency == 7


def test_file_variant_reads_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    secret = tmp_path / "admin_password"
    secret.write_text("from-a-docker-secret\n")
    monkeypatch.setenv("IMAGEGATE_ADMIN_PASSWORD_FILE", str(secret))
    settings = Settings()
    assert settings.admin_password is not None
    assert settings.admin_password.get_secret_value() == "from-a-docker-secret"


def test_environment_beats_file_variant_beats_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "imagegate.toml"
    config.write_text('port = 7000\nhost = "::"\nretention_days = 2\n[models]\ndemo = "demo"\n')
    port_file = tmp_path / "port"
    port_file.write_text("7100")
    monkeypatch.setenv("IMAGEGATE_PORT_FILE", str(port_file))
    settings = load_settings(config)
    assert (settings.port, settings.host, settings.retention_days) == (7100, "::", 2)
    monkeypatch.setenv("IMAGEGATE_PORT", "7200")
    assert load_settings(config).port == 7200
    monkeypatch.setenv("IMAGEGATE_CONFIG", str(config))
    assert load_settings().host == "::"


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "nope.toml")


def test_unreadable_secret_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMAGEGATE_ADMIN_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="ADMIN_PASSWORD_FILE"):
        Settings()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"models": {"m": "nowhere"}, "default_model": "m"}, "not configured"),
        ({"default_model": "unrouted"}, "default_model"),
        ({"max_reference_images": 17}, "max_reference_images"),
        ({"oig_listen": "5000"}, "is not HOST:PORT"),
        ({"oig_listen": "127.0.0.1:99999"}, "is not HOST:PORT"),
        ({"oig_listen": "127.0.0.1:8000"}, "the main listener's port"),
    ],
)
def test_inconsistent_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match=message):
        Settings(**overrides)  # type: ignore[arg-type]


def test_oig_listener_address(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings().oig_address is None
    assert Settings(oig_listen="10.0.0.7:5000").oig_address == ("10.0.0.7", 5000)
    assert Settings(oig_listen="[::1]:5000").oig_address == ("::1", 5000)
    assert Settings(oig_anonymous_key="  ").oig_anonymous_key is None
