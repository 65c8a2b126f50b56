"""Signed webhooks: a job's state changes delivered to the caller's URL, durably, by the workers."""
