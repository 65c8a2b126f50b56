"""What a backend receives is built once: check() judges the job as generate() will get it, without bytes."""

from __future__ import annotations

import base64
from dataclasses import fields, replace
from typing import Any

import pytest

from imagegate.backends.base import BackendRequest, ImageShape, Operation, RequestShape
from imagegate.jobs.requests import GenerationRequest
from tests.fakes.backends import tiny_png
from tests.helpers import Harness, wait_status


def _shape_fields(request: RequestShape) -> dict[str, Any]:
    values = {item.name: getattr(request, item.name) for item in fields(RequestShape)}
    values["references"] = [ImageShape(width=i.width, height=i.height, format=i.format) for i in request.references]
    values["params"] = dict(request.params)
    return values


async def test_check_sees_the_shape_generate_gets_without_the_bytes(harness: Harness) -> None:
    auth = await harness.auth()
    reference = tiny_png(size=(24, 16))
    body = {"prompt": "edit it", "size": "32x32", "reference_images_base64": [base64.b64encode(reference).decode()]}
    response = await harness.client.post("/v1/images/jobs", json=body, headers=auth)
    assert response.status_code == 202, response.text
    await wait_status(harness, response.json()["id"], auth, "succeeded")

    checked, generated = harness.fake.checked[-1], harness.fake.requests[-1]
    assert type(checked) is RequestShape  # no request with stand-in bytes
    assert checked.references == (ImageShape(width=24, height=16, format="png"),)
    assert (checked.operation, generated.operation) == (Operation.EDIT, Operation.EDIT)
    assert _shape_fields(checked) == _shape_fields(generated)
    assert [image.data for image in generated.references] == [reference]
    assert generated.job_id == response.json()["id"]


def test_a_generation_requests_params_cannot_change_after_it_is_made() -> None:
    given = {"style": "vivid"}
    request = GenerationRequest(prompt="p", params=given)
    given["style"] = "natural"
    assert request.params == {"style": "vivid"}
    with pytest.raises(TypeError):
        request.params["style"] = "natural"  # type: ignore[index]


def test_a_backend_requests_params_are_read_only_also_after_replace() -> None:
    request = BackendRequest(
        job_id="img_x",
        model="m",
        prompt="p",
        operation=Operation.GENERATE,
        width=8,
        height=8,
        quality="auto",
        output_format="png",
        count=1,
        params={"user": "u"},
    )
    translated = replace(request, params={"user": "v"})
    for each in (request, translated):
        with pytest.raises(TypeError):
            each.params["user"] = "w"  # type: ignore[index]
    assert (request.params["user"], translated.params["user"]) == ("u", "v")
