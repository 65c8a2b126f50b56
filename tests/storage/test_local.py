"""Local storage: atomic writes, keys cannot escape the root, empty folders are tidied."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagegate.storage import LocalStorage


async def test_put_get_delete_and_list(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    await storage.put("inputs/img_1/0.png", b"abc")
    assert await storage.get("inputs/img_1/0.png") == b"abc"
    assert [obj.key async for obj in storage.list("inputs/")] == ["inputs/img_1/0.png"]
    assert await storage.usage_bytes() == 3
    assert await storage.delete("inputs/img_1/0.png") is True
    assert await storage.delete("inputs/img_1/0.png") is False
    assert not (tmp_path / "files" / "inputs").exists()
    with pytest.raises(FileNotFoundError):
        await storage.get("inputs/img_1/0.png")


async def test_writes_leave_no_partial_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    await storage.put("images/a.png", b"x" * 100_000)
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["a.png"]


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "images/../../x", "images//x", "", "a\\b", "./a"])
async def test_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(ValueError, match="invalid storage key"):
        await storage.put(key, b"x")
