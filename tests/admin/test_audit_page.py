"""The audit page: details in words, not Python reprs, and filters by action, actor and key."""

from __future__ import annotations

from imagegate.admin.web import detail_items
from imagegate.keys.service import KeyLimits
from tests.helpers import Harness, admin_csrf


async def test_audit_details_are_readable_and_filterable(harness: Harness) -> None:
    key, _token = await harness.new_key("nightly reporter", limits=KeyLimits(allowed_models=["fake-model", "demo"]))
    other, _other_token = await harness.new_key("laptop")
    csrf = await admin_csrf(harness)
    await harness.client.post(f"/admin/keys/{other.handle}/disable", data={"csrf": csrf})
    page = (await harness.client.get("/admin/audit")).text
    assert "allowed models:</span> fake-model, demo" in page
    assert "['fake-model'" not in page
    by_key = (await harness.client.get("/admin/audit", params={"key": "reporter"})).text
    assert key.handle in by_key
    assert other.handle not in by_key
    by_action = (await harness.client.get("/admin/audit", params={"action": "key.disable"})).text
    assert other.handle in by_action
    assert key.handle not in by_action
    by_actor = (await harness.client.get("/admin/audit", params={"actor": "admin"})).text
    assert "<td>admin.login</td>" in by_actor
    assert "<td>key.create</td>" not in by_actor  # the harness made the keys as the CLI
    nothing = (await harness.client.get("/admin/audit", params={"action": "no.such_%"})).text
    assert "Nothing matches." in nothing


def test_details_are_said_in_words() -> None:
    detail = {"name": "n", "scopes": ["read", "edit"], "enabled": False, "expires_at": None, "limits": {"a_b": 1}}
    assert detail_items(detail) == [("name", "n"), ("scopes", "read, edit"), ("enabled", "no"), ("limits", "a b 1")]
