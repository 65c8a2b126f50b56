"""What every store promises, run on a local folder and on an S3 bucket (moto on loopback)."""

from __future__ import annotations

import io
import tempfile
from datetime import timedelta

import httpx2
import pytest

from imagegate.storage import Storage, storage_at
from imagegate.storage.local import LocalStorage
from imagegate.storage.location import S3Location
from tests.fakes.postgres import free_port
from tests.fakes.s3 import S3Server

BIG = 6 * 1024 * 1024 + 17  # past obstore's 5 MB part size: an S3 store sends it as a multipart upload


async def test_put_get_stat_and_delete(store: Storage) -> None:
    await store.put("inputs/img_1/0.png", b"abc")
    assert await store.get("inputs/img_1/0.png") == b"abc"
    stat = await store.stat("inputs/img_1/0.png")
    assert (stat.key, stat.size) == ("inputs/img_1/0.png", 3)
    assert await store.usage_bytes() == 3
    assert await store.delete("inputs/img_1/0.png") is True
    assert await store.delete("inputs/img_1/0.png") is False
    for read in (store.get, store.stat, store.open):
        with pytest.raises(FileNotFoundError):
            await read("inputs/img_1/0.png")


async def test_a_write_replaces_the_whole_object(store: Storage) -> None:
    await store.put("images/a.png", b"first, and longer")
    await store.put("images/a.png", b"second")
    assert await store.get("images/a.png") == b"second"


async def test_a_file_is_uploaded_from_where_it_is_and_read_back_in_chunks(store: Storage) -> None:
    data = bytes(range(256)) * (BIG // 256) + b"tail"
    with tempfile.TemporaryFile() as upload:  # on disk, as a large multipart upload is
        upload.write(data)
        await store.put("images/big.png", upload)
    download = await store.open("images/big.png")
    assert download.size == len(data)
    chunks = [chunk async for chunk in download.chunks]
    assert len(chunks) > 1
    assert b"".join(chunks) == data


async def test_a_file_object_is_read_from_its_start(store: Storage) -> None:
    handle = io.BytesIO(b"whole")
    handle.read()  # whoever wrote it left the position at the end
    await store.put("images/b.png", handle)
    assert await store.get("images/b.png") == b"whole"


async def test_listing_is_by_prefix_with_keys_as_written(store: Storage) -> None:
    await store.put("images/a.png", b"1")
    await store.put("images/b.webp", b"22")
    await store.put("inputs/img_1/0.png", b"333")
    images = sorted([(o.key, o.size) async for o in store.list("images/")])
    assert images == [("images/a.png", 1), ("images/b.webp", 2)]
    everything = sorted([o.key async for o in store.list("")])
    assert everything == ["images/a.png", "images/b.webp", "inputs/img_1/0.png"]
    assert [o async for o in store.list("nothing/")] == []


async def test_batched_deletes_remove_every_key_given(store: Storage) -> None:
    keys = [f"images/{i}.png" for i in range(5)]
    for key in keys:
        await store.put(key, b"x")
    removed = await store.delete_many([*keys[:4], "images/never-written.png"])
    assert removed >= 4
    assert [o.key async for o in store.list("images/")] == ["images/4.png"]
    assert await store.delete_many([]) == 0


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "images/../../x", "images//x", "", "a\\b", "./a"])
async def test_keys_cannot_escape_the_store(store: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        await store.put(key, b"x")
    with pytest.raises(ValueError, match="invalid storage key"):
        await store.get(key)


async def test_check_writes_reads_and_leaves_nothing(store: Storage) -> None:
    await store.check()
    assert [o async for o in store.list("")] == []
    assert store.describe()


async def test_presigned_urls_serve_the_object_where_the_store_has_them(store: Storage) -> None:
    await store.put("images/c.png", b"signed bytes")
    url = await store.presign("images/c.png", timedelta(seconds=60))
    if isinstance(store, LocalStorage):
        assert url is None
        return
    assert url is not None
    async with httpx2.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == b"signed bytes"
    assert response.headers["content-type"] == "image/png"


@pytest.mark.usefixtures("s3_credentials")
async def test_an_unreachable_s3_store_is_unavailable_without_saying_where(caplog: pytest.LogCaptureFixture) -> None:
    from imagegate.errors import StorageUnavailable

    endpoint = f"http://127.0.0.1:{free_port()}"
    store = storage_at(S3Location(bucket="nowhere", endpoint=endpoint, region="us-east-1"))
    with pytest.raises(StorageUnavailable) as raised:
        await store.put("images/a.png", b"x")
    assert "127.0.0.1" not in str(raised.value)
    assert endpoint in caplog.text  # the operator sees what failed
    with pytest.raises(StorageUnavailable):
        await store.check()


@pytest.mark.usefixtures("s3_credentials")
async def test_writing_to_a_bucket_that_does_not_exist_is_unavailable_not_missing(s3: S3Server) -> None:
    from imagegate.errors import StorageUnavailable

    store = storage_at(S3Location(bucket="never-created", endpoint=s3.endpoint, region="us-east-1"))
    with pytest.raises(StorageUnavailable):  # obstore says "not found": it must not read as a missing object
        await store.put("images/a.png", b"x")
    with pytest.raises(StorageUnavailable):
        await store.delete_many(["images/a.png"])
    with pytest.raises(FileNotFoundError):
        await store.get("images/a.png")
