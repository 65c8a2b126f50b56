"""imagegate.testing: the backend contract catches each broken promise, and the fake backend keeps it."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagegate.backends.base import BackendRequest, BackendResult, JobReporter, OutputImage
from imagegate.backends.demo import DemoBackend
from imagegate.settings import Settings
from imagegate.testing import BackendContractError, contract_request, run_backend_contract
from tests.fakes.backends import FakeBackend, tiny_png


def settings(tmp_path: Path) -> Settings:
    """Settings for a backend built by hand."""
    return Settings(data_dir=tmp_path)


async def test_the_fake_backend_keeps_the_contract(tmp_path: Path) -> None:
    backend = FakeBackend(name="fake", options={}, settings=settings(tmp_path))
    await run_backend_contract(
        backend,
        accepted=[contract_request(), contract_request(width=96, height=48, count=3)],  # it draws PNGs only
        refused=[contract_request(prompt="unsupported: a fox")],
        failing=[contract_request(prompt="fail: a fox")],
    )
    assert backend.closed


class WrongSize(DemoBackend):
    """Draws every image at 8x8."""

    async def generate(self, request: BackendRequest, reporter: JobReporter) -> BackendResult:
        """Ignore the requested size."""
        return BackendResult(images=[OutputImage(tiny_png())] * request.count)


class TooFew(DemoBackend):
    """Makes one image whatever the count, and says nothing."""

    async def generate(self, request: BackendRequest, reporter: JobReporter) -> BackendResult:
        """One image."""
        result = await super().generate(request, JobReporter(1024))
        return BackendResult(images=result.images[:1])


class Crashes(DemoBackend):
    """Fails with a bare exception."""

    async def generate(self, request: BackendRequest, reporter: JobReporter) -> BackendResult:
        """Crash."""
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("backend_type", "options", "says"),
    [
        (WrongSize, {}, "is (8, 8, 'PNG'), not (64, 64, 'PNG')"),
        (TooFew, {"accepted": [contract_request(count=2)]}, "1 of 2 image(s), the log silent"),
        (Crashes, {"accepted": (), "failing": [contract_request()]}, "with RuntimeError, not an ImagegateError"),
        (DemoBackend, {"refused": [contract_request(prompt="anything")]}, "it should raise InvalidRequest"),
        (DemoBackend, {"accepted": (), "failing": [contract_request()]}, "it was expected to fail"),
    ],
    ids=["wrong size", "too few, silently", "a bare exception", "refuses nothing", "never fails"],
)
async def test_each_broken_promise_is_named(
    tmp_path: Path, backend_type: type[DemoBackend], options: dict[str, list[BackendRequest]], says: str
) -> None:
    backend = backend_type(name="broken", options={}, settings=settings(tmp_path))
    with pytest.raises(BackendContractError) as caught:
        await run_backend_contract(backend, **options)
    assert says in str(caught.value)
