"""Imports every table so that Base.metadata is complete (Alembic and tests use it)."""

from imagegate.admin.models import AdminCredential, AdminSession, LoginFailure
from imagegate.backends.models import BackendEvent, BackendState, BackendUsage
from imagegate.db import Base
from imagegate.jobs.models import IdempotencyRecord, Job, JobImage, JobInput, Worker
from imagegate.keys.models import ApiKey, AuditEvent, RateEvent
from imagegate.webhooks.models import WebhookAttempt, WebhookDelivery

__all__ = [
    "AdminCredential",
    "AdminSession",
    "ApiKey",
    "AuditEvent",
    "BackendEvent",
    "BackendState",
    "BackendUsage",
    "Base",
    "IdempotencyRecord",
    "Job",
    "JobImage",
    "JobInput",
    "LoginFailure",
    "RateEvent",
    "WebhookAttempt",
    "WebhookDelivery",
    "Worker",
]
