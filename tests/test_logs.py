"""Logs never carry secrets, prompts or forged lines: a real server at debug level, and the formatters."""

from __future__ import annotations

import logging
import re
import secrets
import sys
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from imagegate.db import create_engine
from imagegate.logs import JsonFormatter, KeyValueFormatter
from tests.fakes.server import base_env, serve

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
NEW_KEY = re.compile(r'id="new-key">(ig_[^<]+)<')


def admin_login(client: httpx2.Client, password: str) -> str:
    """Log in through the form; the CSRF token of the keys page."""
    form = client.get("/admin/login")
    token = CSRF.search(form.text)
    assert token is not None
    assert client.post("/admin/login", data={"csrf": token[1], "password": password}).status_code == 303
    keys_page = CSRF.search(client.get("/admin/keys").text)
    assert keys_page is not None
    return keys_page[1]


def test_a_debug_level_server_logs_no_secret_no_prompt_and_no_forged_line(database_url: str, tmp_path: Path) -> None:
    password = "admin-" + secrets.token_hex(12)
    metrics_token = "metrics-" + secrets.token_hex(12)
    prompt = "prompt-" + secrets.token_hex(12)
    env = base_env(
        IMAGEGATE_DATA_DIR=str(tmp_path / "data"),
        IMAGEGATE_DATABASE_URL=database_url,
        IMAGEGATE_ADMIN_PASSWORD=password,
        IMAGEGATE_METRICS_TOKEN=metrics_token,
        IMAGEGATE_LOG_LEVEL="debug",
    )
    with serve(env, tmp_path) as server, httpx2.Client(base_url=server.url, timeout=60) as client:
        csrf = admin_login(client, password)
        created = client.post(
            "/admin/keys", data={"csrf": csrf, "name": "ci", "scopes": ["generate", "read"]}, follow_redirects=True
        )
        found = NEW_KEY.search(created.text)
        assert found is not None
        key = found[1]
        auth = {"Authorization": f"Bearer {key}"}
        generated = client.post("/v1/images/generate", json={"prompt": prompt, "size": "64x64"}, headers=auth)
        assert generated.status_code == 200, generated.text
        assert client.get("/v1/images/jobs", headers=auth).status_code == 200
        assert client.post("/v1/images/generations", json={"prompt": prompt, "model": "nope"}, headers=auth).is_error
        forged = client.get("/v1/images/x%0a2026-01-01T00:00:00Z%20INFO%20forged:%20line%0d", headers=auth)
        assert forged.status_code == 404
        assert client.get("/metrics", headers={"Authorization": f"Bearer {metrics_token}"}).status_code == 200
        cookie = client.cookies.get("imagegate_admin")
        assert cookie
        server.terminate()
    log = server.output()
    assert "Application startup complete" in log  # uvicorn's own lines go through the same formatter
    assert "INFO:     " not in log
    for secret in (password, metrics_token, key, key.removeprefix("ig_"), prompt, cookie):
        assert secret not in log
    assert not any(line.startswith("2026-01-01") for line in log.splitlines())
    assert "forged: line" in log  # still there, on the request's own line, escaped
    assert "\\n2026-01-01" in log


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    """A log record as a logger call would make it."""
    made = logging.LogRecord("imagegate.http", logging.INFO, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


@pytest.mark.parametrize("formatter", [KeyValueFormatter(), JsonFormatter()])
def test_control_characters_in_messages_and_fields_are_escaped(formatter: logging.Formatter) -> None:
    line = formatter.format(record("%s %s", "GET", "/x\nFAKE\r\x1b[31m\u2028\ud800", route="/y\nFAKE", key="k\x00"))
    assert "\n" not in line
    assert "\r" not in line
    assert "\x1b" not in line
    assert "\u2028" not in line
    assert "\x00" not in line
    line.encode("utf-8")  # a lone surrogate would make writing the line fail


@pytest.mark.parametrize("formatter", [KeyValueFormatter(), JsonFormatter()])
def test_uvicorns_coloured_copy_of_a_message_is_not_a_field(formatter: logging.Formatter) -> None:
    line = formatter.format(
        record("Started server process [%d]", 7, color_message="Started server process [\x1b[36m%d\x1b[0m]")
    )
    assert "Started server process [7]" in line
    assert "color_message" not in line


def test_a_traceback_keeps_its_lines_but_escapes_the_rest() -> None:
    try:
        raise ValueError("bad\x1b[2Jvalue")
    except ValueError:
        made = logging.LogRecord("imagegate", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    formatted = KeyValueFormatter().format(made)
    assert "Traceback" in formatted.splitlines()[1]
    assert "\x1b" not in formatted


async def test_database_errors_never_carry_statement_parameters(database_url: str) -> None:
    secret = "secret-" + secrets.token_hex(8)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("CREATE TEMPORARY TABLE t (v VARCHAR(80) PRIMARY KEY)"))
            await connection.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": secret})
            with pytest.raises(DBAPIError) as duplicate:
                await connection.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": secret})
        failures = [duplicate.value]
        if engine.dialect.name == "postgresql":
            async with engine.connect() as connection:
                with pytest.raises(DBAPIError) as typed:
                    await connection.execute(text("SELECT CAST(:n AS INTEGER) + 1"), {"n": secret})
            failures.append(typed.value)
    finally:
        await engine.dispose()
    for failure in failures:
        made = logging.LogRecord("imagegate", logging.ERROR, __file__, 1, "failed", (), None)
        made.exc_info = (type(failure), failure, failure.__traceback__)
        for formatter in (KeyValueFormatter(), JsonFormatter()):
            assert secret not in formatter.format(made)
