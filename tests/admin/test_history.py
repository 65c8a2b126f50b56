"""The admin history and job pages: thumbnails, durations, surfaces and request ids, deleted jobs, CSV export,
and re-running a job in the playground (whose refusals keep what was typed)."""

from __future__ import annotations

import csv
import io
import re

from imagegate.testing import tiny_png
from tests.helpers import Harness, admin_csrf, bearer


async def generate(harness: Harness, token: str, prompt: str, **fields: object) -> dict[str, object]:
    """A finished job made through the native API."""
    response = await harness.client.post(
        "/v1/images/generate",
        json={"prompt": prompt, **fields},
        headers=bearer(token) | {"x-request-id": "req-from-caller"},
    )
    body: dict[str, object] = response.json()
    return body


async def test_history_rows_show_a_thumbnail_the_duration_and_deleted_jobs(harness: Harness) -> None:
    _key, token = await harness.new_key("reporter")
    kept = await generate(harness, token, "a kept fox")
    gone = await generate(harness, token, "a deleted fox")
    assert (await harness.client.delete(f"/v1/images/jobs/{gone['id']}", headers=bearer(token))).status_code == 200
    await admin_csrf(harness)
    history = (await harness.client.get("/admin/history")).text
    rows = {m[1]: m[0] for m in re.finditer(r'<tr[^>]*>.*?href="/admin/jobs/(img_\w+)".*?</tr>', history, re.S)}
    assert 'class="mini"' in rows[str(kept["id"])]
    assert re.search(r'<td class="took">\d+\.\d s</td>', rows[str(kept["id"])])
    assert 'class="mini"' not in rows[str(gone["id"])]
    assert (
        '<span class="status deleted">deleted</span> <span class="deleted-by">by its caller</span>'
        in (rows[str(gone["id"])])
    )
    assert "deleted-by" not in rows[str(kept["id"])]
    assert "Deleted by its caller " in (await harness.client.get(f"/admin/jobs/{gone['id']}")).text
    job_page = (await harness.client.get(f"/admin/jobs/{kept['id']}")).text
    assert '<code id="request-id">req-from-caller</code>' in job_page
    assert "native (native API)" in job_page
    assert "Took</dt><dd>" in job_page


async def test_the_overview_shows_recent_jobs_with_their_thumbnails(harness: Harness) -> None:
    _key, token = await harness.new_key("reporter")
    job = await generate(harness, token, "a fox on the overview")
    await admin_csrf(harness)
    overview = await harness.client.get("/admin")
    assert overview.status_code == 200, overview.text
    row = re.search(rf'<tr[^>]*>.*?href="/admin/jobs/{job["id"]}".*?</tr>', overview.text, re.S)
    assert row is not None
    assert 'class="mini"' in row[0]


async def test_a_job_is_re_run_from_a_filled_in_playground(harness: Harness) -> None:
    key, token = await harness.new_key("reporter")
    job = await generate(harness, token, "a heron <at> dawn", size="96x64", quality="low")
    await admin_csrf(harness)
    form = (await harness.client.get("/admin/playground", params={"from": str(job["id"])})).text
    assert "Filled in from job" in form
    assert "a heron &lt;at&gt; dawn</textarea>" in form
    assert 'name="size" value="96x64"' in form
    assert f'<option value="{key.handle}" selected>' in form
    assert "<option selected>low</option>" in form
    assert (await harness.client.get("/admin/playground", params={"from": "img_none"})).status_code == 404


async def test_a_refused_playground_run_keeps_the_form_and_the_navigation(harness: Harness) -> None:
    from imagegate.keys.service import KeyLimits

    key, _token = await harness.new_key("tiny", limits=KeyLimits(daily_image_quota=1))
    csrf = await admin_csrf(harness, "/admin/playground")
    fields = {"csrf": csrf, "key": key.handle, "prompt": "a long and careful prompt", "size": "64x64"}
    assert (await harness.client.post("/admin/playground", data=fields)).status_code == 303
    refused = await harness.client.post("/admin/playground", data=fields)
    assert refused.status_code == 429
    assert "a long and careful prompt</textarea>" in refused.text
    assert 'name="size" value="64x64"' in refused.text
    assert 'role="alert"' in refused.text
    assert "Log out" in refused.text
    with_files = await harness.client.post(
        "/admin/playground", data=fields, files=[("references", ("cat.png", tiny_png(), "image/png"))]
    )
    assert with_files.status_code == 429
    assert "The 1 reference image(s) you chose were not kept: choose them again." in with_files.text


async def test_a_refused_history_filter_keeps_the_filters_and_the_navigation(harness: Harness) -> None:
    await admin_csrf(harness)
    refused = await harness.client.get("/admin/history", params={"since": "soon", "q": "a red fox", "key": "ci"})
    assert refused.status_code == 400
    assert "&#39;soon&#39; is not a date; use YYYY-MM-DD." in refused.text
    assert 'name="q" value="a red fox"' in refused.text
    assert 'name="key" value="ci"' in refused.text
    assert "Log out" in refused.text


async def test_the_filtered_history_exports_as_csv(harness: Harness) -> None:
    key, token = await harness.new_key("reporter")
    await generate(harness, token, '=HYPERLINK("http://example.invalid")')
    await generate(harness, token, "fail:no ink")
    await admin_csrf(harness)
    page = (await harness.client.get("/admin/history", params={"status": "succeeded"})).text
    assert 'href="/admin/history.csv?status=succeeded"' in page
    export = await harness.client.get("/admin/history.csv", params={"status": "succeeded"})
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 1
    assert rows[0]["key_name"] == "reporter"
    assert rows[0]["key_handle"] == key.handle
    assert rows[0]["status"] == "succeeded"
    assert rows[0]["prompt"].startswith("'=HYPERLINK")  # a spreadsheet shows it, does not run it
    everything = list(csv.DictReader(io.StringIO((await harness.client.get("/admin/history.csv")).text)))
    assert {row["status"] for row in everything} == {"succeeded", "failed"}
    assert (await harness.client.get("/admin/history.csv", params={"since": "soon"})).status_code == 400
