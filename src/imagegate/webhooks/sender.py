"""The webhook sender every worker process runs: claim a due delivery, sign it, POST it, record the attempt."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

import httpx2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from imagegate import __version__
from imagegate.errors import ImagegateError
from imagegate.settings import Settings
from imagegate.webhooks import service
from imagegate.webhooks.service import Due, Outcome
from imagegate.webhooks.targets import check_destination

logger = logging.getLogger(__name__)

# A sender holds a delivery this much longer than the request may take, then another process may retry it.
LEASE_MARGIN_SECONDS = 5.0


def signed_headers(due: Due, secret: str, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for the delivery: webhook-id, webhook-timestamp, webhook-signature."""
    return {
        "webhook-id": due.id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(due.id, now, due.payload),
        "content-type": "application/json",
        "user-agent": f"ImageGate-Webhooks/{__version__}",
    }


class WebhookSender:
    """Sends due deliveries from the database, a few at a time; any number of processes may run one."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings, sender_id: str) -> None:
        self.sessions = sessions
        self.settings = settings
        self.sender_id = sender_id
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)
        self._sends: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        # Made at the first send: a client loads the CA bundle (~0.1 s of CPU), which most processes never need.
        self._http: httpx2.AsyncClient | None = None

    def start(self) -> None:
        """Start the claim loop."""
        self._loop = asyncio.create_task(self._run(), name="webhooks")

    def wake(self) -> None:
        """A delivery may be due now: look at once rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop claiming, let sends in flight finish (each is bounded by the timeout), close the client."""
        self._stop.set()
        if self._loop is not None:
            await asyncio.gather(self._loop, return_exceptions=True)
        await asyncio.gather(*self._sends, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

    def _client(self) -> httpx2.AsyncClient:
        if self._http is None:
            timeout = self.settings.webhook_timeout_seconds
            self._http = httpx2.AsyncClient(follow_redirects=False, timeout=timeout, trust_env=False)
        return self._http

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self._slots.acquire()
            if self._stop.is_set():
                self._slots.release()
                break
            self._wake.clear()
            try:
                due = await self._claim()
            except Exception:
                logger.exception("claiming a webhook delivery failed; retrying")
                due = None
            if due is None:
                self._slots.release()
                await self._pause()
                continue
            task = asyncio.create_task(self._deliver(due), name=f"webhook:{due.id}")
            self._sends.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sends.discard(task)
        self._slots.release()
        self._wake.set()  # the job's next event may be due now

    async def _pause(self) -> None:
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self._stop.wait())]
        await asyncio.wait(waits, timeout=self.settings.poll_interval_seconds, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()

    async def _claim(self) -> Due | None:
        lease = 2 * self.settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS
        async with self.sessions() as session:
            if not await service.any_due(session):
                return None
        async with self.sessions() as session, session.begin():
            return await service.claim_due(session, sender=self.sender_id, lease_seconds=lease)

    async def _deliver(self, due: Due) -> None:
        outcome = await self.attempt(due)
        retry = (
            self.settings.webhook_retry_initial_seconds,
            self.settings.webhook_retry_max_seconds,
            self.settings.webhook_retry_hours,
        )
        try:
            state = await service.record(self.sessions, due, outcome, sender=self.sender_id, retry=retry)
        except Exception:
            logger.exception("recording webhook attempt %s failed; its lease runs out and it is retried", due.id)
            return
        logger.info(
            "webhook attempt",
            extra={"delivery": due.id, "status_code": outcome.status_code, "state": state, "error": outcome.error},
        )

    async def attempt(self, due: Due) -> Outcome:
        """One POST of the delivery; never raises."""
        started = time.perf_counter()

        def outcome(status_code: int | None, error: str | None = None) -> Outcome:
            return Outcome(status_code, int((time.perf_counter() - started) * 1000), error)

        if not due.secret:
            return outcome(None, "the key that asked for this webhook was deleted")
        try:
            await check_destination(due.url, allow_private=self.settings.webhook_allow_private)
        except ImagegateError as error:
            return outcome(None, error.message)
        headers = signed_headers(due, due.secret, datetime.now(UTC))
        try:
            async with self._client().stream(
                "POST", due.url, content=due.payload.encode(), headers=headers
            ) as response:
                await self._drain(response)
                status = response.status_code
        except httpx2.TimeoutException:
            return outcome(None, f"no answer within {self.settings.webhook_timeout_seconds:g} s")
        except httpx2.HTTPError as error:
            return outcome(None, f"could not connect: {type(error).__name__}")
        if 300 <= status < 400:
            return outcome(status, "redirects are not followed")
        return outcome(status, None if 200 <= status < 300 else f"answered {status}")

    async def _drain(self, response: httpx2.Response) -> None:
        """Read at most the response limit of the answer; the rest is not wanted."""
        read = 0
        with contextlib.suppress(httpx2.HTTPError):
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= self.settings.webhook_response_max_bytes:
                    break
