"""`double11 serve` stopped while its disk is full (a real one: a small tmpfs):
the shutdown snapshot cannot be written, which it says in one line, and the
next start, with the disk still short of space, has every acknowledged
checkout.  The in-process cases are tests/test_snapshot_full_disk.py's."""

from __future__ import annotations

import os

import httpx
from conftest import SplitServer

from double11.catalog.files import save_catalog
from double11.catalog.generate import generate_catalog
from double11.storage import snapshot as snapshots

SNAPSHOT_FAILED = "the snapshot could not be written (No space left on device): the previous snapshot at record"
BIG_CATALOG = {"merchants": 2000, "skus": 20000, "seed": 11}  # a snapshot of megabytes
LOG_ROOM_BYTES = 512 * 1024  # what the full disk leaves: the log's records fit, a snapshot does not


def _fill(directory, leave_bytes: int):
    fs = os.statvfs(directory)
    size = fs.f_bavail * fs.f_frsize - leave_bytes
    with open(directory / "ballast", "wb") as f:
        chunk = bytes(1 << 20)
        while size > 0:
            size -= f.write(chunk[: min(size, len(chunk))])


def _checkout(url: str, sku: int, i: int) -> dict:
    r = httpx.post(url + "/v1/checkouts", json={"buyer": 1 + i % 40, "country": "CN", "channel": "mobile",
                                                 "lines": [{"sku": sku, "qty": 1}], "idempotency_key": f"k{i}"})
    assert r.status_code == 201, r.text
    return r.json()


def test_serve_stopped_on_a_full_disk_says_so_and_its_restart_has_every_checkout(tmp_path, small_tmpfs):
    catalog = generate_catalog(**BIG_CATALOG)
    catalog_dir = tmp_path / "catalog"
    save_catalog(catalog, catalog_dir)
    skus = catalog.sku_id[:20].tolist()
    data = small_tmpfs(16)
    split = SplitServer(catalog_dir, data)
    try:
        answers = [_checkout(split.url, skus[i % len(skus)], i) for i in range(30)]
        _fill(data, LOG_ROOM_BYTES)
        answers += [_checkout(split.url, skus[i % len(skus)], i) for i in range(30, 45)]  # the log has room
        seen = {a["checkout"]: httpx.get(f"{split.url}/v1/checkouts/{a['checkout']}").json() for a in answers}
    finally:
        split.stop()
    said = split.log_path.read_text()
    assert SNAPSHOT_FAILED in said and "Traceback" not in said, said[-3000:]
    assert snapshots.latest(data)[0] == 0 and [p for p in data.iterdir() if p.suffix == ".tmp"] == []

    again = SplitServer(catalog_dir, data)  # the disk still full: recovery needs only a segment's header
    try:
        assert {c: httpx.get(f"{again.url}/v1/checkouts/{c}").json() for c in seen} == seen
        for i, answer in enumerate(answers):  # a retry finds the first answer
            assert _checkout(again.url, skus[i % len(skus)], i) == answer
    finally:
        again.stop()


def test_the_engine_closed_without_its_snapshot_exits_1_and_one_with_it_0(tmp_path, small_tmpfs):
    """The engine process's exit status says whether its closing snapshot was
    written: 1 when the disk was full (the log keeps everything, but the
    operator has a disk to see to), 0 once there is room."""
    import asyncio
    import json

    from double11.link.remote import RemoteFestival

    catalog_dir = tmp_path / "catalog"
    save_catalog(generate_catalog(**BIG_CATALOG), catalog_dir)
    data = small_tmpfs(16)
    options = {"catalog_dir": str(catalog_dir), "data_dir": str(data), "speedup": 0.0, "clock_start_ms": None}
    body = json.dumps({"commands": [{"op": "checkout", "buyer": 3, "country": "CN", "channel": "mobile",
                                     "lines": [{"sku": 2, "qty": 1}], "idempotency_key": "one"}]}).encode()

    async def one_checkout_then_close(fill: bool) -> int:
        engine = await RemoteFestival.start(options)
        try:
            code, answer, _ = await engine.batch(body, False)
            assert code == 0 and json.loads(answer)["results"][0]["status"] == 201, answer
            if fill:
                _fill(data, LOG_ROOM_BYTES)
        finally:
            await engine.close()
        assert engine.process is not None
        return engine.process.returncode

    assert asyncio.run(one_checkout_then_close(fill=True)) == 1
    assert snapshots.latest(data)[0] == 0
    (data / "ballast").unlink()
    assert asyncio.run(one_checkout_then_close(fill=False)) == 0  # the checkout's retry, answered as before
    assert snapshots.latest(data)[0] == 2  # written at this close: both batches are in it
