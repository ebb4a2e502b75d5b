"""Crash safety over HTTP: SIGKILL the server mid-load, restart it on the same
data directory, and check that nothing acknowledged was lost or changed.

The server runs as a real subprocess (the CLI's `serve` when there is one,
else `double11.http.server.serve_main`); load comes from several threads,
each sending batches of checkouts and pays (and single checkouts) with unique
idempotency keys and recording every acknowledged command with its result.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from double11 import geo
from double11.catalog import Catalog

ROOT = Path(__file__).resolve().parent.parent
SKUS = 40
STOCK = 30  # per SKU: scarce, so the load runs into out_of_stock
THREADS = 4
LOAD_S = 1.2
CLOCK_START_MS = 1_510_329_600_000 + 10 * 3_600_000


def crash_catalog() -> Catalog:
    ids = np.arange(1001, 1001 + SKUS, dtype=np.int64)
    return Catalog(
        merchant_id=np.array([1, 2, 3, 4], dtype=np.int64),
        merchant_name=["One", "Two", "Three", "Four"],
        merchant_marketplace=np.array([0, 1, 2, 3], dtype=np.uint8),
        merchant_country=np.array([geo.encode("CN")] * 4, dtype=np.uint16),
        brand_id=np.array([1, 2], dtype=np.int64),
        brand_name=["Apple", "Xiaomi"],
        brand_international=np.array([True, False], dtype=bool),
        brand_origin=np.array([geo.encode("US"), geo.encode("CN")], dtype=np.uint16),
        sku_id=ids,
        sku_merchant=(np.arange(SKUS, dtype=np.int64) % 4) + 1,
        sku_brand=(np.arange(SKUS, dtype=np.int64) % 2) + 1,
        sku_price_fen=100 + 37 * np.arange(SKUS, dtype=np.int64),
        sku_stock=np.full(SKUS, STOCK, dtype=np.int64),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _has_cli_serve() -> bool:
    if not (ROOT / "double11" / "__main__.py").exists():
        return False
    r = subprocess.run([sys.executable, "-m", "double11", "serve", "--help"], cwd=ROOT,
                       capture_output=True, timeout=30)
    out = r.stdout + r.stderr
    return r.returncode == 0 and b"--data" in out and b"--catalog" in out and b"--port" in out


class ServerProcess:
    def __init__(self, catalog_dir: Path, data_dir: Path, log_path: Path, use_cli: bool):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if use_cli:
            cmd = [sys.executable, "-m", "double11", "serve", "--open",
                   "--data", str(data_dir), "--port", str(self.port),
                   "--catalog", str(catalog_dir)]
        else:
            cmd = [sys.executable, "-c",
                   "import sys; from double11.http.server import serve_main; "
                   "serve_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), 1.0, int(sys.argv[4]))",
                   str(catalog_dir), str(data_dir), str(self.port), str(CLOCK_START_MS)]
        self.log = open(log_path, "ab")  # noqa: SIM115 (held for the server's life, closed by kill)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # a session of its own: a crash kills the front and the engine process together
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        # a first start after the engine changed compiles it (about half a minute, more on a busy machine)
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/v1/stats", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"server did not start: {log_path.read_text()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL to every process of the server: the front and the engine."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def terminate(self, timeout_s: float = 15) -> int:
        """SIGTERM to every process of the server, as a service manager stops it."""
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.log.close()


def _checkout_cmd(rng: random.Random, key: str) -> dict:
    n = rng.randint(1, 3)
    skus = rng.sample(range(1001, 1001 + SKUS), n)
    return {"op": "checkout", "idempotency_key": key, "buyer": rng.randint(1, 500),
            "country": rng.choice(["CN", "US", "JP", "DE"]), "channel": rng.choice(["mobile", "pc"]),
            "lines": [{"sku": s, "qty": rng.randint(1, 3)} for s in skus]}


def load(url: str, worker: int, stop: threading.Event, acked: list, errors: list) -> None:
    """Batches of checkouts + pays for earlier checkouts, and single checkouts,
    until the server dies.  Appends (command, result) for every acknowledged one."""
    rng = random.Random(worker)
    to_pay: list[tuple[int, int]] = []
    seq = 0
    try:
        with httpx.Client(base_url=url, timeout=10) as c:
            while not stop.is_set():
                cmds = []
                for _ in range(6):
                    seq += 1
                    cmds.append(_checkout_cmd(rng, f"w{worker}-{seq}"))
                while to_pay and len(cmds) < 12:
                    cid, amount = to_pay.pop()
                    seq += 1
                    cmds.append({"op": "pay", "idempotency_key": f"w{worker}-{seq}", "checkout": cid,
                                 "amount_fen": amount})
                r = c.post("/v1/batch", json={"commands": cmds})
                if r.status_code != 200:
                    errors.append(f"batch answered {r.status_code}: {r.text[:300]}")
                    return
                results = r.json()["results"]
                for cmd, res in zip(cmds, results):
                    acked.append((cmd, res))
                    if cmd["op"] == "checkout" and res["status"] == 201 and rng.random() < 0.7:
                        to_pay.append((res["body"]["checkout"], res["body"]["amount_fen"]))
                seq += 1
                cmd = _checkout_cmd(rng, f"w{worker}-{seq}")
                single = {k: v for k, v in cmd.items() if k != "op"}
                r = c.post("/v1/checkouts", json=single)
                acked.append((cmd, {"status": r.status_code, "body": r.json()}))
    except (httpx.TransportError, ValueError):
        return  # the server was killed
    except Exception as e:  # pragma: no cover - reported by the test
        errors.append(repr(e))


def test_sigkill_mid_load_loses_nothing_acknowledged(tmp_path):
    from double11.catalog.files import save_catalog

    catalog_dir = tmp_path / "catalog"
    save_catalog(crash_catalog(), catalog_dir)
    data_dir = tmp_path / "data"
    log_path = tmp_path / "server.log"
    use_cli = _has_cli_serve()

    srv = ServerProcess(catalog_dir, data_dir, log_path, use_cli)
    acked_by_thread: list[list] = [[] for _ in range(THREADS)]
    errors: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(srv.url, i, stop, acked_by_thread[i], errors))
               for i in range(THREADS)]
    try:
        for t in threads:
            t.start()
        time.sleep(LOAD_S)
        srv.kill()  # SIGKILL, mid-load
    finally:
        stop.set()
        for t in threads:
            t.join(20)
        if srv.proc.poll() is None:
            srv.kill()
    assert not errors, errors
    acked = [x for per in acked_by_thread for x in per]
    checkouts_ok = [(c, r) for c, r in acked if c["op"] == "checkout" and r["status"] == 201]
    pays_ok = [(c, r) for c, r in acked if c["op"] == "pay" and r["status"] == 200]
    assert len(checkouts_ok) > 20 and len(pays_ok) > 10, (len(checkouts_ok), len(pays_ok))
    assert any(r["status"] == 409 for _, r in acked), "the load never ran out of stock"

    srv = ServerProcess(catalog_dir, data_dir, log_path, use_cli)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            # every acknowledged checkout and payment is there
            paid = {cmd["checkout"] for cmd, _ in pays_ok}
            for cmd, res in checkouts_ok:
                body = res["body"]
                v = c.get(f"/v1/checkouts/{body['checkout']}")
                assert v.status_code == 200, v.text
                v = v.json()
                assert v["amount_fen"] == body["amount_fen"]
                assert v["buyer"] == cmd["buyer"] and v["channel"] == cmd["channel"]
                assert (sorted((x["sku"], x["qty"]) for x in v["lines"])
                        == sorted((x["sku"], x["qty"]) for x in cmd["lines"]))
                assert [o["order"] for o in v["orders"]] == [o["order"] for o in body["orders"]]
                if body["checkout"] in paid:
                    assert v["status"] == "paid"

            # retrying every acknowledged command (same key, same body) returns exactly the first result
            for i in range(0, len(acked), 2000):
                part = acked[i:i + 2000]
                r = c.post("/v1/batch", json={"commands": [cmd for cmd, _ in part]})
                assert r.status_code == 200
                for (cmd, first), again in zip(part, r.json()["results"]):
                    assert again == first, (cmd, first, again)

            # no SKU oversold
            for sku in range(1001, 1001 + SKUS):
                s = c.get(f"/v1/skus/{sku}").json()
                assert min(s["stock"], s["reserved"], s["sold"]) >= 0, s
                assert s["stocked"] == STOCK
                assert s["stock"] + s["reserved"] + s["sold"] == s["stocked"], s

            # the ledger balances, and GMV is exactly the paid checkouts
            assert c.get("/v1/ledger").json()["sum"] == 0
            stats = c.get("/v1/stats").json()
            gmv = 0
            for cid in range(1, stats["checkouts"] + 1):
                v = c.get(f"/v1/checkouts/{cid}").json()
                if v["status"] == "paid":
                    gmv += v["amount_fen"]
            assert stats["gmv_fen"] == gmv
            assert stats["payments"] >= len(pays_ok)
            assert c.get(f"/v1/checkouts/{stats['checkouts'] + 1}").status_code == 404
    finally:
        # graceful stop: SIGTERM closes the festival and exits 0
        rc = srv.terminate()
    assert rc == 0, log_path.read_text()[-3000:]

    srv = ServerProcess(catalog_dir, data_dir, log_path, use_cli)
    try:
        after = httpx.get(srv.url + "/v1/stats", timeout=10).json()
        assert after["checkouts"] == stats["checkouts"] and after["gmv_fen"] == stats["gmv_fen"]
    finally:
        srv.kill()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
