"""What test modules share: apps on test settings, keys, the API's paths, admin logins, job waits, Codex setups.

Fixtures live in conftest.py; everything a test module imports from elsewhere comes from here or tests/fakes/,
never from another test module.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx2
import pytest
from fastapi import FastAPI
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from imagegate import onehop
from imagegate.api.legacy_listener import create_oig_app
from imagegate.app import create_app
from imagegate.backends import usage
from imagegate.db import create_engine, session_factory, utcnow
from imagegate.jobs import idempotency
from imagegate.jobs.models import Job, JobKind, JobStatus
from imagegate.keys import service as keys
from imagegate.keys.models import ApiKey
from imagegate.keys.service import KeyLimits
from imagegate.services import services_of
from imagegate.settings import BackendConfig, Settings
from tests.fakes.backends import FakeBackend
from tests.fakes.codex import write_fake_codex

FAKE_TYPE = "tests.fakes.backends:FakeBackend"
TEMPLATE_DB = "imagegate_template"
ADMIN_PASSWORD = "test-admin-password"
GENERATE = "/v1/images/generate"
ASYNC = {"Prefer": "respond-async"}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_databases = itertools.count()
_job_ids = itertools.count()

# Settings and apps


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for tests: the fake backend as default, short waits, everything under data_dir."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "backends": fake_backends(),
        "models": {"fake-model": "fake", "demo": "demo"},
        "default_model": "fake-model",
        "wait_timeout_seconds": 10.0,
        "poll_interval_seconds": 0.2,
        "shutdown_grace_seconds": 5.0,
        "admin_password": ADMIN_PASSWORD,
        "auto_migrate": False,  # every test database is a copy of a migrated template; the servers still migrate
    }
    values.update(overrides)
    return Settings(**values)


def fake_backends(concurrency: int = 4) -> dict[str, BackendConfig]:
    """The standard test backends with the fake one's concurrency set."""
    return {
        "fake": BackendConfig(type=FAKE_TYPE, concurrency=concurrency),
        "demo": BackendConfig(type="demo", concurrency=2),
    }


class Harness:
    """A running app, an HTTP client on it, and helpers to make keys."""

    def __init__(self, app: FastAPI, client: httpx2.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def fake(self) -> FakeBackend:
        """The app's FakeBackend instance."""
        backend = self.app.state.services.jobs.backends.backends["fake"]
        assert isinstance(backend, FakeBackend)
        return backend

    async def new_key(self, name: str = "tester", **kwargs: Any) -> tuple[ApiKey, str]:
        """Create a key; returns it and its raw token."""
        async with self.app.state.services.sessions() as session, session.begin():
            return await keys.create_key(session=session, name=name, **kwargs)

    async def auth(self, name: str = "tester", **limits: Any) -> dict[str, str]:
        """Authorization headers for a new key with the given limits (KeyLimits fields)."""
        _key, token = await self.new_key(name, limits=KeyLimits(**limits))
        return {"Authorization": f"Bearer {token}"}


HarnessFactory = Callable[..., AbstractAsyncContextManager[Harness]]


async def start(settings: Settings) -> AsyncIterator[Harness]:
    """Run the app's lifespan and yield a harness; shut it down afterwards."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Harness(app, client)


@asynccontextmanager
async def oig_client(harness: Harness) -> AsyncIterator[httpx2.AsyncClient]:
    """A client on the second listener's app (what IMAGEGATE_OIG_LISTEN serves), sharing the harness's state."""
    opened = services_of(harness.app)
    transport = httpx2.ASGITransport(app=create_oig_app(harness.app, settings=opened.settings, metrics=opened.metrics))
    async with httpx2.AsyncClient(transport=transport, base_url="http://oig") as client:
        yield client


# PostgreSQL databases


async def create_pg_database(base: str, name: str, template: str | None = None) -> None:
    """CREATE DATABASE on the server at base, as a file copy of template when one is given."""
    connection = await asyncpg.connect(base.replace("postgresql+asyncpg", "postgresql") + "/postgres")
    try:
        suffix = f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""
        await connection.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await connection.close()


async def drop_pg_database(base: str, name: str) -> None:
    """DROP DATABASE on the server at base, closing whatever connections a test left open to it."""
    connection = await asyncpg.connect(base.replace("postgresql+asyncpg", "postgresql") + "/postgres")
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def new_pg_database(base: str) -> str:
    """A fresh migrated PostgreSQL database (copied from the template); its URL."""
    name = f"t_{next(_databases)}"
    asyncio.run(create_pg_database(base, name, TEMPLATE_DB))
    return f"{base}/{name}"


# The native API and its jobs


def b64(data: bytes) -> str:
    """Plain base64 text."""
    return base64.b64encode(data).decode()


async def submit(harness: Harness, prompt: str, auth: dict[str, str]) -> str:
    """Queue a job without waiting; returns its id."""
    response = await harness.client.post(GENERATE, json={"prompt": prompt}, headers={**auth, **ASYNC})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


async def generated(harness: Harness, token: str, prompt: str = "p", **body: Any) -> str:
    """Generate and wait for the job (the native API's synchronous answer); returns its id."""
    answer = await harness.client.post(GENERATE, json={"prompt": prompt, **body}, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    job_id: str = answer.json()["id"]
    return job_id


def reporting_backends(usage: dict[str, Any]) -> dict[str, BackendConfig]:
    """The fake backend reporting this token usage with every image (as OpenAI's does), and the demo, none."""
    return {"fake": BackendConfig(type=FAKE_TYPE, options={"usage": usage}), "demo": BackendConfig(type="demo")}


async def wait_status(harness: Harness, job_id: str, auth: dict[str, str], status: str, timeout: float = 60) -> None:
    """Poll the job until it reaches status (a deadline, not a measurement: loaded machines are slow)."""
    async with asyncio.timeout(timeout):
        while True:
            response = await harness.client.get(f"/v1/images/jobs/{job_id}", headers=auth)
            if response.json()["status"] == status:
                return
            await asyncio.sleep(0.02)


def job_row(
    key: str, fair_tag: int = 0, *, backend: str = "fake", status: str = JobStatus.QUEUED, kind: str = JobKind.IMAGE
) -> Job:
    """A job row for tests that write the job table directly: the key by handle, its fair-queuing tag."""
    return Job(
        id=f"img_test{next(_job_ids):020d}",
        key_handle=key,
        kind=kind,
        status=status,
        model="fake-model",
        backend=backend,
        prompt=f"{key} {fair_tag}",
        size="auto",
        width=1024,
        height=1024,
        quality="auto",
        output_format="png",
        count=1,
        fair_tag=fair_tag,
        expires_at=utcnow() + timedelta(days=1),
    )


async def stored_job(harness: Harness, job_id: str) -> Job:
    """The job row."""
    async with harness.app.state.services.sessions() as session:
        job: Job | None = await session.scalar(select(Job).where(Job.id == job_id))
    assert job is not None
    return job


# The admin UI


async def login(client: httpx2.AsyncClient, password: str = ADMIN_PASSWORD) -> httpx2.Response:
    """Fetch the login form, then post it with its CSRF token."""
    form = await client.get("/admin/login")
    return await client.post("/admin/login", data={"csrf": csrf_of(form), "password": password, "next": "/admin"})


async def admin_csrf(harness: Harness, path: str = "/admin") -> str:
    """Log in and take the session's CSRF token from a page."""
    await login(harness.client)
    return csrf_of(await harness.client.get(path))


def bearer(token: str) -> dict[str, str]:
    """Authorization headers for a raw key."""
    return {"Authorization": f"Bearer {token}"}


def csrf_of(page: httpx2.Response) -> str:
    """The CSRF token a page carries."""
    token = CSRF.search(page.text)
    assert token is not None
    return token[1]


# The Codex backend with the fake executable


def codex_settings(tmp_path: Path, accounts: int = 1, **options: Any) -> dict[str, Any]:
    """Settings overrides adding a 'codex' backend that runs the fake executable."""
    homes = [{"name": f"acct{i}", "home": str(tmp_path / f"home{i}")} for i in range(accounts)]
    backend = BackendConfig(
        type="codex",
        concurrency=4,
        options={
            "executable": str(write_fake_codex(tmp_path)),
            "accounts": homes,
            "timeout_seconds": 20,
            "kill_grace_seconds": 1,
            "usage_url": None,  # no test ever reaches out; the quota tests point it at a fake on loopback
            **options,
        },
    )
    return {
        "backends": {**fake_backends(), "codex": backend},
        "models": {"fake-model": "fake", "demo": "demo", "gpt-image-codex": "codex"},
    }


async def generate_on_codex(harness: Harness, prompt: str, **body: Any) -> Any:
    """A native generate on the codex model."""
    return await harness.client.post(
        GENERATE, json={"prompt": prompt, "model": "gpt-image-codex", **body}, headers=await harness.auth()
    )


def codex_workdirs(harness: Harness) -> Path:
    """Where the codex backend keeps its job workdirs."""
    return Path(harness.app.state.services.settings.data_dir) / "codex" / "codex"


async def account_successes(harness: Harness) -> dict[str, int]:
    """Successful execs per account in the last 5 h."""
    async with harness.app.state.services.sessions() as session:
        rows = await usage.stats(session, backend="codex", now=utcnow())
    return {row.subject: row.windows["5h"].successes for row in rows}


# The legacy surface (the original service's validation table)

DALL_E_3_SIZES = "Invalid size for dall-e-3. Supported sizes: 1024x1024, 1024x1792, 1792x1024"
COUNT = "Count must be an integer between 1 and 10"
# (body as sent, exact message): the table's rows in order, then ImageGate's stricter type checks.
LEGACY_VALIDATION_CASES: list[tuple[Any, str]] = [
    ([], "Request body is required"),
    ([{"prompt": "a cat"}], "Request body is required"),
    ("a cat", "Request body is required"),
    (None, "Request body is required"),
    ({}, "Request body is required"),
    ({"model": "dall-e-3"}, "Missing required field: prompt"),
    ({"prompt": 123}, "Prompt must be a string"),
    ({"prompt": None}, "Prompt must be a string"),
    ({"prompt": ["a cat"]}, "Prompt must be a string"),
    ({"prompt": ""}, "Prompt cannot be empty"),
    ({"prompt": " \n\t "}, "Prompt cannot be empty"),
    ({"prompt": "", "model": "nope"}, "Prompt cannot be empty"),
    ({"prompt": "x", "model": "dall-e-4"}, "Invalid model. Supported models: dall-e-2, dall-e-3"),
    ({"prompt": "x", "model": 3}, "Invalid model. Supported models: dall-e-2, dall-e-3"),
    ({"prompt": "x", "model": "nope", "size": "1x1"}, "Invalid model. Supported models: dall-e-2, dall-e-3"),
    ({"prompt": "x", "size": "512x512"}, DALL_E_3_SIZES),
    ({"prompt": "x", "size": 1024}, DALL_E_3_SIZES),
    ({"prompt": "x", "size": "1024x1024 "}, DALL_E_3_SIZES),
    (
        {"prompt": "x", "model": "dall-e-2", "size": "1792x1024"},
        "Invalid size for dall-e-2. Supported sizes: 256x256, 512x512, 1024x1024",
    ),
    ({"prompt": "x", "size": "big", "quality": "ultra"}, DALL_E_3_SIZES),
    ({"prompt": "x", "quality": "ultra"}, "Invalid quality. Supported: standard, hd"),
    ({"prompt": "x", "quality": None}, "Invalid quality. Supported: standard, hd"),
    ({"prompt": "x", "quality": "HD", "style": "pastel"}, "Invalid quality. Supported: standard, hd"),
    ({"prompt": "x", "style": "pastel"}, "Invalid style. Supported: vivid, natural"),
    ({"prompt": "x", "style": 1, "count": 0}, "Invalid style. Supported: vivid, natural"),
    ({"prompt": "x", "count": 0}, COUNT),
    ({"prompt": "x", "count": 11}, COUNT),
    ({"prompt": "x", "count": -1}, COUNT),
    ({"prompt": "x", "count": True}, COUNT),
    ({"prompt": "x", "count": 2.0}, COUNT),
    ({"prompt": "x", "count": "2"}, COUNT),
    ({"prompt": "x", "count": None}, COUNT),
]


def dead_pid() -> int:
    """A process id no process of this machine has now (the highest free one below the kernel's usual maximum)."""
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


@dataclass
class Counts:
    """Statements sent and transactions begun on an engine while counting.

    Those of the async engine's own connections are also listed apart: on a SQLite file that is aiosqlite, a
    thread hand-off per statement (and per BEGIN and COMMIT), where onehop's writer takes one per transaction.
    """

    statements: list[str]
    transactions: int = 0
    async_statements: list[str] = field(default_factory=list)
    async_transactions: int = 0


@contextmanager
def counting(engine: AsyncEngine) -> Iterator[Counts]:
    """Count every statement and transaction the engine runs inside the block."""
    counts = Counts([])

    def statement(conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        counts.statements.append(" ".join(sql.split())[:80])
        if conn.engine is engine.sync_engine:
            counts.async_statements.append(counts.statements[-1])

    def begin(conn: Any) -> None:
        counts.transactions += 1
        counts.async_transactions += conn.engine is engine.sync_engine

    # The hot transactions' own engine on SQLite, too.
    with listening(onehop.sync_engines(engine), before_cursor_execute=statement, begin=begin):
        yield counts


@contextmanager
def listening(targets: Iterable[Any], **hooks: Callable[..., None]) -> Iterator[None]:
    """SQLAlchemy event hooks (event name = function) on every target inside the block."""
    targets = list(targets)
    for target in targets:
        for name, hook in hooks.items():
            event.listen(target, name, hook)
    try:
        yield
    finally:
        for target in targets:
            for name, hook in hooks.items():
                event.remove(target, name, hook)


def count_fingerprints(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The surfaces whose request bodies are fingerprinted for Idempotency-Key from now on, one per fingerprint."""
    original = idempotency.request_hash
    surfaces: list[str] = []

    def counted(surface: str, body: Any) -> str:
        surfaces.append(surface)
        return original(surface, body)

    monkeypatch.setattr(idempotency, "request_hash", counted)
    return surfaces


async def disable_key_elsewhere(harness: Harness, key: ApiKey) -> None:
    """Disable a key through an engine of its own, as another process would (this one's cache is not told)."""
    other = create_engine(harness.app.state.services.settings.database_url)
    try:
        async with session_factory(other)() as session, session.begin():
            await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(enabled=False))
    finally:
        await other.dispose()
