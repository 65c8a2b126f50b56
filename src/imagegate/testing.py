"""Helpers for testing ImageGate and its backends: cheap password hashing for test runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from argon2 import PasswordHasher, profiles

from imagegate.admin import password


@contextmanager
def cheap_password_hashing() -> Iterator[None]:
    """Hash admin passwords with argon2's cheapest parameters meanwhile: for test runs only, never in production."""
    production = password.HASHER
    password.HASHER = PasswordHasher.from_parameters(profiles.CHEAPEST)
    try:
        yield
    finally:
        password.HASHER = production
