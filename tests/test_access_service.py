"""Access in the engine's service and the tokens' tools (the routes: tests/http/test_access.py).

A command refused for its sender is refused where the state is (whose
checkout this is), lands in the log as that refusal, and replays the same
without any principal; its idempotency key stays free for its owner."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from model import T0, co, pay, small_catalog

from double11.access import tokens
from double11.access.roles import OPERATOR, Principal, Role
from double11.errors import Double11Error
from double11.service import Festival

ROOT = Path(__file__).resolve().parents[1]
BUYER_1, BUYER_2 = Principal(Role.buyer, 1), Principal(Role.buyer, 2)


def test_another_buyers_payment_is_refused_as_missing_and_replays_so(tmp_path):
    data = tmp_path / "data"
    f = Festival.open(small_catalog(), data_dir=data, clock_start_ms=T0, speedup=0.0)
    (c,) = f.execute([co("c", [(102, 1)], buyer=1)], principal=BUYER_1)
    checkout, amount = c["body"]["checkout"], c["body"]["amount_fen"]
    theirs, foreign = f.execute([pay("k", checkout, amount), co("as-1", [(102, 1)], buyer=1)], principal=BUYER_2)
    assert theirs == {"status": 404, "body": {"error": {"code": "unknown_checkout",
                                                        "message": f"checkout {checkout} does not exist"}}}
    assert foreign["status"] == 403 and foreign["body"]["error"]["message"] == \
        "a buyer token acts for buyer 2 only: buyer 1 is another's"
    # the key of a refused command is not taken: its owner may use it
    (mine,) = f.execute([pay("k", checkout, amount)], principal=BUYER_1)
    assert mine["status"] == 200
    seen = f.checkout(checkout), f.ledger(), f.engine.c_status.size
    f.close()
    again = Festival.open(small_catalog(), data_dir=data, clock_start_ms=T0, speedup=0.0)
    try:
        assert (again.checkout(checkout), again.ledger(), again.engine.c_status.size) == seen
    finally:
        again.close()


def test_a_role_a_command_does_not_allow_is_forbidden_and_the_operator_may_do_anything():
    f = Festival.open(small_catalog(), clock_start_ms=T0, speedup=0.0)
    restock = {"op": "restock", "idempotency_key": "r", "sku": 102, "qty": 5}
    (as_buyer,) = f.execute([restock], principal=BUYER_1)
    assert as_buyer["status"] == 403 and as_buyer["body"]["error"]["message"] == "a buyer token may not restock"
    (as_other_merchant,) = f.execute([restock], principal=Principal(Role.merchant, 20))
    assert as_other_merchant["status"] == 403
    assert f.sku(102)["stocked"] == 5
    (as_its_merchant,) = f.execute([restock], principal=Principal(Role.merchant, 10))
    (as_operator,) = f.execute([{**restock, "idempotency_key": "r2"}], principal=OPERATOR)
    assert as_its_merchant["status"] == as_operator["status"] == 200 and f.sku(102)["stocked"] == 15


def test_tokens_verify_and_say_what_is_wrong():
    key = bytes(range(32))
    verifier = tokens.Verifier([key])
    assert verifier.principal(f"Bearer {tokens.issue(key, Role.merchant, 10)}") == Principal(Role.merchant, 10)
    with pytest.raises(Double11Error, match="expired"):
        verifier.principal(f"Bearer {tokens.issue(key, Role.operator, ttl_s=5, now_s=time.time() - 60)}")
    with pytest.raises(ValueError, match="needs --id"):
        tokens.issue(key, Role.buyer)
    with pytest.raises(ValueError, match="acts for everyone"):
        tokens.issue(key, Role.gateway, 3)
    assert [tokens.parse_ttl_s(t) for t in ("90", "45s", "30m", "1h", "7d")] == [90, 45, 1800, 3600, 604800]
    for wrong in ("0", "1y", "-5", "h", "400d"):
        with pytest.raises(ValueError, match="--ttl"):
            tokens.parse_ttl_s(wrong)


def test_the_python_api_issues_from_a_data_folders_key(tmp_path):
    token = tokens.issue_in(tmp_path, Role.merchant, 10, ttl_s=60)
    key = tokens.load_or_create_key(tmp_path / tokens.KEY_FILE)
    assert tokens.Verifier([key]).principal(f"Bearer {token}") == Principal(Role.merchant, 10)


def test_a_rotated_key_keeps_the_old_tokens_valid_until_they_expire(tmp_path):
    path = tmp_path / tokens.KEY_FILE
    old = tokens.issue(tokens.load_or_create_key(path), Role.operator)
    assert path.stat().st_mode & 0o777 == 0o600
    tokens.rotate(path)
    new = tokens.issue(tokens.load_or_create_key(path), Role.operator)
    verifier = tokens.Verifier(tokens.keys_at(path))
    assert verifier.principal(f"Bearer {old}") == verifier.principal(f"Bearer {new}") == OPERATOR
    (tmp_path / tokens.PREVIOUS_KEY_FILE).unlink()  # the operator refuses the old key's tokens
    with pytest.raises(Double11Error, match="not signed by this festival's key"):
        tokens.Verifier(tokens.keys_at(path)).principal(f"Bearer {old}")


def double11(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "double11", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_tokens_issue_prints_the_token_alone_on_its_last_line(tmp_path):
    r = double11("tokens", "issue", "--data", str(tmp_path), "--role", "buyer", "--id", "42", "--ttl", "2h")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip().splitlines()[-1]
    key = tokens.load_or_create_key(tmp_path / tokens.KEY_FILE)
    assert tokens.Verifier([key]).principal(f"Bearer {token}") == Principal(Role.buyer, 42)
    for args, said in ((["--role", "buyer"], "a buyer token needs --id (a positive id)"),
                       (["--role", "operator", "--id", "3"], "an operator token acts for everyone: leave out --id"),
                       (["--role", "gateway", "--ttl", "soon"], "--ttl must be a positive number of seconds")):
        r = double11("tokens", "issue", "--data", str(tmp_path), *args)
        assert r.returncode == 2 and said in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = double11("tokens", "rotate", "--data", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "no token key at" in r.stderr and "Traceback" not in r.stderr


def test_an_idempotency_key_is_each_buyers_own():
    f = Festival.open(small_catalog(), clock_start_ms=T0, speedup=0.0)
    (first,) = f.execute([co("same-key", [(102, 1)], buyer=1)], principal=BUYER_1)
    (other,) = f.execute([co("same-key", [(104, 1)], buyer=2)], principal=BUYER_2)
    assert first["status"] == other["status"] == 201
    assert first["body"]["checkout"] != other["body"]["checkout"]
    (retry,) = f.execute([co("same-key", [(102, 1)], buyer=1)], principal=BUYER_1)
    assert retry == first  # the first answer again, from buyer 1's own space
    (reused,) = f.execute([co("same-key", [(105, 1)], buyer=1)], principal=BUYER_1)
    assert reused["status"] == 409 and reused["body"]["error"]["code"] == "idempotency_key_reused"


def test_a_binary_batch_from_a_buyer_is_checked_and_scoped_too():
    import asyncio

    from double11.engine.encode import encode_commands
    from double11.engine.wire import decode_results

    f = Festival.open(small_catalog(), clock_start_ms=T0, speedup=0.0)
    (mine,) = f.execute([co("c", [(102, 1)], buyer=1)], principal=BUYER_1)
    body = encode_commands([pay("p", mine["body"]["checkout"], mine["body"]["amount_fen"]),
                            co("as-1", [(102, 1)], buyer=1)]).to_bytes()

    async def send() -> bytes:
        return await f.submit_binary(body, BUYER_2)

    answers = decode_results(asyncio.run(send()))
    assert [int(c) for c in answers["code"]] == [21, 57]  # unknown_checkout, forbidden
    assert f.checkout(mine["body"]["checkout"])["status"] == "reserved"
