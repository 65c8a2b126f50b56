"""`imagegate jobs …`: the operator's view of every key's jobs: list, show, cancel and delete."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer

from imagegate.admin import queries
from imagegate.admin import service as operator
from imagegate.api.native import render_job
from imagegate.backends.registry import BackendSet
from imagegate.cli.common import ConfigOption, load, sessions_for, short
from imagegate.errors import ImagegateError, NotFound
from imagegate.jobs import queries as job_queries
from imagegate.jobs.events import JobEvents
from imagegate.jobs.models import Job, JobStatus
from imagegate.jobs.service import JobContext
from imagegate.listening import listen_url, recorded_url
from imagegate.settings import Settings
from imagegate.storage import storage_for

jobs_app = typer.Typer(help="Every key's jobs, for the operator: list, show, cancel, delete.", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table (for scripts).")]
STATUSES = ", ".join(status.value for status in JobStatus)
T = TypeVar("T")


@contextlib.asynccontextmanager
async def operator_context(settings: Settings) -> AsyncIterator[JobContext]:
    """The job verbs' context on the command's database, acting as the operator (any key's jobs)."""
    async with sessions_for(settings) as sessions:
        # The verbs used here never reach a backend: none is built (a provider key may be missing in this shell).
        backends = BackendSet({}, {}, settings.models, settings.default_model)
        yield JobContext(
            sessions=sessions, storage=storage_for(settings), backends=backends, settings=settings, events=JobEvents()
        )


def run_jobs(settings: Settings, work: Callable[[JobContext], Awaitable[T]]) -> T:
    """Run work with the operator's context; domain errors become their message and exit code 1."""

    async def main() -> T:
        async with operator_context(settings) as ctx:
            return await work(ctx)

    try:
        return asyncio.run(main())
    except ImagegateError as error:
        typer.echo(f"Error: {error.message}", err=True)
        raise typer.Exit(1) from None


def base_url(settings: Settings) -> str:
    """Where the server's links point: IMAGEGATE_PUBLIC_BASE_URL (the address behind a proxy), else where this
    data folder's running server recorded it listens (a `--port` of its own), else the configured address."""
    if settings.public_base_url:
        return settings.public_base_url
    return recorded_url(settings) or listen_url(settings.host, settings.port, settings.root_path)


def as_json(job: Job, settings: Settings) -> dict[str, Any]:
    """A job as the native API shows it, plus which key it belongs to."""
    deleted = {"deleted_at": job.deleted_at.isoformat(), "deleted_by": job.deleted_by} if job.deleted_at else {}
    return {**render_job(job, base_url(settings)), "key": job.key_handle, **deleted}


def summary(job: Job) -> dict[str, Any]:
    """A job's line of the listing, for scripts (`jobs show ID --json` has the rest)."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": job.id,
        "status": job.status,
        "key": job.key_handle,
        "model": job.model,
        "backend": job.backend,
        "prompt": job.prompt,
        "count": job.count,
        "image_count": job.image_count,
        "created_at": iso(job.created_at),
        "finished_at": iso(job.finished_at),
        "error": job.error_message if job.error_code else None,
        "error_code": job.error_code,
    }


DELETED_BY = {"caller": "its caller", "admin": "the operator (admin UI)", "cli": "the operator (imagegate jobs delete)"}


def describe(job: Job, settings: Settings) -> list[str]:
    """A job for people."""
    lines = [
        f"id:          {job.id}",
        f"status:      {job.status}{' (cancel requested)' if job.cancel_requested else ''}",
        f"key:         {job.key_handle or '-'}",
        f"model:       {job.model} (backend {job.backend})",
        f"prompt:      {job.prompt}",
        f"size:        {job.size}, quality {job.quality}, {job.count} x {job.output_format}",
        f"created:     {short(job.created_at)}",
        f"started:     {short(job.started_at)}",
        f"finished:    {short(job.finished_at)}",
        f"expires:     {short(job.expires_at)}",
        f"request id:  {job.request_id or '-'}",
    ]
    if job.error_code:
        lines.append(f"error:       {job.error_code}: {job.error_message or ''}")
    if job.deleted_at:
        lines.append(f"deleted:     {short(job.deleted_at)} by {DELETED_BY.get(job.deleted_by or '', 'someone')}")
    base = base_url(settings)
    lines += [f"image:       {base}/generated/{image.name}" for image in job.live_images]
    return lines


async def _listed(ctx: JobContext, filters: queries.HistoryFilter, limit: int) -> list[Job]:
    found: list[Job] = []
    cursor: str | None = None
    async with ctx.sessions() as session:
        while len(found) < limit:
            page = await queries.history(session, filters, cursor)
            found += page.jobs
            cursor = page.next_cursor
            if cursor is None:
                break
    return found[:limit]


def _status(value: str | None) -> str:
    if value is None:
        return ""
    if value not in {status.value for status in JobStatus}:
        raise typer.BadParameter(f"{value!r} is not a job status; use one of: {STATUSES}")
    return value


@jobs_app.command("list")
def jobs_list(
    key: Annotated[str | None, typer.Option(help="Only this key's jobs (its handle, key_…).")] = None,
    status: Annotated[str | None, typer.Option(help=f"Only jobs in this status: {STATUSES}.")] = None,
    model: Annotated[str | None, typer.Option(help="Only jobs for this model.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many jobs, newest first.")] = 50,
    json_output: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """List every key's jobs, newest first (filter by key, status or model)."""
    settings = load(config)
    filters = queries.HistoryFilter(key=key or "", status=_status(status), model=model or "")
    found = run_jobs(settings, lambda ctx: _listed(ctx, filters, limit))
    if json_output:
        typer.echo(json.dumps([summary(job) for job in found], indent=2))
        return
    if not found:
        typer.echo("No jobs.")
        return
    typer.echo(f"{'ID':<30} {'STATUS':<10} {'CREATED':<20} {'KEY':<18} {'MODEL':<16} PROMPT")
    for job in found:
        prompt = job.prompt if len(job.prompt) <= 40 else job.prompt[:39] + "…"
        typer.echo(
            f"{job.id:<30} {job.status:<10} {short(job.created_at):<20} {job.key_handle or '-':<18} "
            f"{job.model:<16} {prompt}"
        )


async def _any_job(ctx: JobContext, job_id: str) -> Job:
    """Any key's job, also a deleted one (as the admin job page shows it)."""
    async with ctx.sessions() as session:
        job = await job_queries.any_job(session, job_id)
    if job is None:
        raise NotFound(f"No job {job_id!r}.", param="id")
    return job


@jobs_app.command("show")
def jobs_show(job_id: str, json_output: JsonOption = False, config: ConfigOption = None) -> None:
    """Show one job (any key's, also a deleted one): its request, status, error and image URLs."""
    settings = load(config)
    job = run_jobs(settings, lambda ctx: _any_job(ctx, job_id))
    typer.echo(json.dumps(as_json(job, settings), indent=2) if json_output else "\n".join(describe(job, settings)))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, config: ConfigOption = None) -> None:
    """Cancel a queued job, or ask the worker running it to stop (any key's job)."""
    job = run_jobs(load(config), lambda ctx: operator.cancel_job(ctx=ctx, job_id=job_id, actor="cli"))
    if job.status == JobStatus.RUNNING:
        typer.echo(f"Asked the worker running {job_id} to stop it; it ends as cancelled.")
    else:
        typer.echo(f"Cancelled {job_id}.")


@jobs_app.command("delete")
def jobs_delete(
    job_id: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = None,
) -> None:
    """Delete a job that is not running, with its files (asks first; --yes for scripts)."""
    settings = load(config)
    if not yes and not typer.confirm(f"Delete {job_id} and its images for good?", default=False):
        typer.echo("Not deleted.", err=True)
        raise typer.Exit(1)
    run_jobs(settings, lambda ctx: operator.delete_job(ctx=ctx, job_id=job_id, actor="cli"))
    typer.echo(f"Deleted {job_id}.")
