"""Local storage: atomic writes leave no partial files, empty folders are tidied (the rest: test_contract.py)."""

from __future__ import annotations

from pathlib import Path

from imagegate.storage import LocalStorage


async def test_deleting_the_last_file_of_a_folder_removes_the_folder(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    await storage.put("inputs/img_1/0.png", b"abc")
    assert storage.local_path("inputs/img_1/0.png") == tmp_path / "files" / "inputs" / "img_1" / "0.png"
    assert await storage.delete("inputs/img_1/0.png") is True
    assert not (tmp_path / "files" / "inputs").exists()
    assert (tmp_path / "files").is_dir()


async def test_writes_leave_no_partial_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    await storage.put("images/a.png", b"x" * 100_000)
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["a.png"]
