"""A torn tail of the command log is cut off; damage stops the start, names
where it is, and changes nothing; `double11 log check` and `double11 log
repair` look at it and accept the loss.  Every log here is a real one, written
by a Festival and closed, then damaged on disk."""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from model import small_catalog

from double11 import Festival, cli
from double11.lifecycle import SERVING, lock_data_dir, mark_data_dir
from double11.storage import UnreadableData
from double11.storage import log as command_log
from double11.storage.damage import LogDamaged

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_510_329_600_000
RECORD = struct.Struct("<IIQq")  # the record header: payload bytes, crc32, sequence, time (storage/log.py)
BATCHES = 6


def _catalog():
    return small_catalog({sku: 100 for sku in range(101, 105)})  # no checkout here runs out of stock


def _batch(i: int) -> list[dict]:
    """Batch i's three checkouts (`_execute` adds a pay)."""
    return [{"op": "checkout", "buyer": 7 + i, "country": "CN", "channel": "mobile",
                             "lines": [{"sku": 101 + (i + j) % 4, "qty": 1}], "idempotency_key": f"c{i}-{j}"}
                            for j in range(3)]


def _pay(f: Festival, checkout: int, key: str) -> dict:
    view = f.checkout(checkout)
    assert view is not None
    return {"op": "pay", "idempotency_key": key, "checkout": checkout, "amount_fen": view["amount_fen"]}


def _views(f: Festival) -> dict:
    stats = f.stats()
    return {"checkouts": [f.checkout(i) for i in range(1, 3 * BATCHES + 2)],
            "orders": [f.order(i) for i in range(1, 3 * BATCHES + 2)],
            "skus": [f.sku(s) for s in range(101, 107)], "ledger": f.ledger(),
            "gmv": stats["gmv_fen"], "checkouts_total": stats["checkouts"]}


def _execute(f: Festival, i: int) -> None:
    """Batch i, from the second one on with a pay of a checkout of the batch before: 3 or 4 commands."""
    commands = _batch(i)
    if i:
        commands.append(_pay(f, 3 * i - 1, f"p{i}"))
    f.execute(commands, T0 + 1_000 * i)


def _festival(data: Path, restart_after: int | None = None) -> list[dict]:
    """A festival of BATCHES batches, one record each, closed without a final
    snapshot; with restart_after, closed and opened again after that many
    (a new segment).  Returns its views after each batch."""
    f = Festival.open(_catalog(), data_dir=data)
    seen = [_views(f)]
    for i in range(BATCHES):
        if i == restart_after:
            f.close()
            f = Festival.open(data_dir=data)
        _execute(f, i)
        seen.append(_views(f))
    f.close()
    return seen


def _segments(data: Path) -> list[Path]:
    return [p for _, p in command_log.segments(data)]


def _records(segment: Path) -> list[tuple[int, int, int]]:
    """(offset, seq, bytes) of each record of a segment, read with the format's own layout."""
    data = segment.read_bytes()
    at, found = 16, []  # after the segment header
    while at < len(data):
        length, _, seq, _ = RECORD.unpack_from(data, at)
        found.append((at, seq, RECORD.size + length))
        at += RECORD.size + length
    return found


def _flip(segment: Path, offset: int) -> bytes:
    data = bytearray(segment.read_bytes())
    data[offset] ^= 0x40
    segment.write_bytes(bytes(data))
    return bytes(data)


def _files(data: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data.iterdir()) if p.name != "LOCK"}


def _open_refused(data: Path) -> str:
    before = _files(data)
    with pytest.raises(LogDamaged) as refused:
        Festival.open(data_dir=data)
    assert _files(data) == before  # nothing cut off, nothing written
    message = str(refused.value)
    assert "\n" not in message and isinstance(refused.value, UnreadableData)
    return message


# --- what recovery tells apart -----------------------------------------------------------


@pytest.mark.parametrize("field", ["length", "checksum", "sequence", "payload"])
def test_a_flipped_byte_in_a_middle_record_stops_the_start_naming_segment_and_offset(tmp_path, field):
    _festival(tmp_path)
    (segment,) = _segments(tmp_path)
    offset, seq, size = _records(segment)[2]
    assert seq == 3
    within = {"length": 2, "checksum": 5, "sequence": 8, "payload": size - 10}[field]
    _flip(segment, offset + within)
    message = _open_refused(tmp_path)
    assert f"{segment} at byte {offset:,}" in message
    assert "record 3" in message and "3 intact records" in message  # records 4, 5 and 6 follow it
    assert "double11 log repair" in message and "backup" in message


def test_damage_in_a_segment_before_the_last_is_damage_even_in_its_last_record(tmp_path):
    _festival(tmp_path, restart_after=3)
    first, last = _segments(tmp_path)
    offset, seq, size = _records(first)[-1]  # in the last segment, this would be a torn tail
    assert seq == 3 and offset + size == first.stat().st_size
    _flip(first, offset + size - 1)
    message = _open_refused(tmp_path)
    assert f"{first} at byte {offset:,}" in message and "record 3 does not match its checksum" in message
    assert "3 intact records" in message and "1 later segment included" in message


def test_a_segment_before_the_last_that_ends_inside_its_header_is_damage(tmp_path, capsys):
    _festival(tmp_path, restart_after=2)
    first, last = _segments(tmp_path)
    first.write_bytes(first.read_bytes()[:5])
    message = _open_refused(tmp_path)
    assert f"{first} at byte 0: the segment ends inside its header" in message and "4 intact records" in message
    status, out, _ = _run(capsys, "log", "repair", "--data", str(tmp_path), "--at-damage", "--yes")
    assert status == 0 and "records 1 to 6: 4 intact, holding 16 commands, 2 unreadable or missing" in out
    assert _segments(tmp_path) == []  # nothing was left in either
    g = Festival.open(data_dir=tmp_path)
    assert g.checkout(1) is None and g.ledger()["sum"] == 0
    g.close()


def test_a_segment_missing_between_two_others_is_damage(tmp_path):
    _festival(tmp_path, restart_after=2)
    f = Festival.open(data_dir=tmp_path)  # a third segment
    _execute(f, BATCHES)
    f.close()
    first, middle, last = _segments(tmp_path)
    middle.unlink()
    message = _open_refused(tmp_path)
    assert f"{last} at byte 16" in message and "record 7 where record 3 belongs" in message


@pytest.mark.parametrize("cut_bytes", [1, 5, RECORD.size + 3])
def test_a_torn_last_record_is_cut_off_with_one_warning_saying_how_much(tmp_path, caplog, cut_bytes):
    seen = _festival(tmp_path)
    (segment,) = _segments(tmp_path)
    offset, seq, size = _records(segment)[-1]
    with open(segment, "r+b") as f:  # a crash while the last record was written
        f.truncate(offset + size - cut_bytes)
    with caplog.at_level(logging.WARNING, logger="double11.storage"):
        g = Festival.open(data_dir=tmp_path)
    assert _views(g) == seen[BATCHES - 1]  # the batches before the torn one
    assert g.ledger()["sum"] == 0
    g.close()
    (said,) = [r for r in caplog.records if r.name == "double11.storage"]
    assert said.levelno == logging.WARNING
    assert f"{size - cut_bytes:,} bytes at byte {offset:,}" in said.getMessage() and str(segment) in said.getMessage()


def test_a_last_record_whose_checksum_is_wrong_is_a_torn_tail(tmp_path, caplog):
    seen = _festival(tmp_path)
    (segment,) = _segments(tmp_path)
    offset, _, size = _records(segment)[-1]
    _flip(segment, offset + size - 3)
    with caplog.at_level(logging.WARNING, logger="double11.storage"):
        g = Festival.open(data_dir=tmp_path)
    assert _views(g) == seen[BATCHES - 1]
    g.close()
    assert segment.stat().st_size == offset
    assert [f"{size:,} bytes at byte {offset:,}" in r.getMessage() for r in caplog.records] == [True]


def test_garbage_after_the_last_record_is_cut_off_and_every_record_kept(tmp_path, caplog):
    seen = _festival(tmp_path)
    (segment,) = _segments(tmp_path)
    size = segment.stat().st_size
    with open(segment, "ab") as f:
        f.write(bytes(range(200)) * 3)
    with caplog.at_level(logging.WARNING, logger="double11.storage"):
        g = Festival.open(data_dir=tmp_path)
    assert _views(g) == seen[BATCHES]
    g.close()
    assert segment.stat().st_size == size
    assert [f"600 bytes at byte {size:,}" in r.getMessage() for r in caplog.records] == [True]


def test_a_clean_log_reads_without_a_word(tmp_path, caplog):
    seen = _festival(tmp_path, restart_after=4)
    before = _files(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="double11.storage"):
        g = Festival.open(data_dir=tmp_path)
    assert _views(g) == seen[BATCHES]
    g.close()
    assert not [r for r in caplog.records if r.name == "double11.storage"]
    assert {name: data for name, data in _files(tmp_path).items() if name in before} == before


def test_a_segment_the_snapshot_covers_is_not_read(tmp_path):
    """A crash between a snapshot and dropping the segments it covers leaves
    them; damage in one of them loses nothing, and does not stop the start."""
    f = Festival.open(_catalog(), data_dir=tmp_path)
    for i in range(3):
        _execute(f, i)
    (covered,) = _segments(tmp_path)
    kept = covered.read_bytes()
    f.snapshot()
    _execute(f, 3)
    seen = _views(f)
    f.close()
    covered.write_bytes(kept)
    offset, _, _ = _records(covered)[1]
    _flip(covered, offset + 30)
    g = Festival.open(data_dir=tmp_path)
    assert _views(g) == seen
    g.close()


# --- double11 log check and repair ------------------------------------------------------


def _run(capsys, *args: str) -> tuple[int, str, str]:
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_repair_says_what_it_would_drop_then_drops_it_and_the_festival_opens_with_the_rest(tmp_path, capsys):
    seen = _festival(tmp_path)
    (segment,) = _segments(tmp_path)
    offset, _, size = _records(segment)[2]
    damaged = _flip(segment, offset + size // 2)

    status, out, _ = _run(capsys, "log", "check", "--data", str(tmp_path))
    assert status == 1 and f"{segment} at byte {offset:,}" in out and "records 1 to 2" in out

    status, out, _ = _run(capsys, "log", "repair", "--data", str(tmp_path), "--at-damage")
    assert status == 0 and segment.read_bytes() == damaged
    assert out.startswith(f"would drop {segment} from byte {offset:,} on: records 3 to 6: 3 intact, holding "
                          f"12 commands, 1 unreadable") and "nothing was changed" in out

    status, out, _ = _run(capsys, "log", "repair", "--data", str(tmp_path), "--at-damage", "--yes")
    assert status == 0 and out.startswith(f"dropped {segment} from byte {offset:,} on: records 3 to 6: 3 intact, "
                                          f"holding 12 commands")
    assert segment.read_bytes() == damaged[:offset]
    g = Festival.open(data_dir=tmp_path)
    assert _views(g) == seen[2]  # exactly the two batches before the damage
    assert g.ledger()["sum"] == 0
    _execute(g, 2)  # and it goes on from there
    assert _views(g) == seen[3]
    g.close()

    status, out, _ = _run(capsys, "log", "check", "--data", str(tmp_path))
    assert status == 0 and "no damage" in out


def test_repair_at_a_record_boundary_removes_the_later_segments(tmp_path, capsys):
    seen = _festival(tmp_path, restart_after=3)
    first, last = _segments(tmp_path)
    offset, seq, _ = _records(first)[1]
    before = _files(tmp_path)
    status, out, _ = _run(capsys, "log", "repair", "--data", str(tmp_path), "--truncate-at", f"{first.name}:{offset}")
    assert status == 0 and "records 2 to 6: 5 intact, holding 20 commands" in out and "1 later segment" in out
    assert _files(tmp_path) == before
    status, out, _ = _run(capsys, "log", "repair", "--data", str(tmp_path), "--truncate-at",
                          f"{first}:{offset}", "--yes")
    assert status == 0 and out.startswith("dropped")
    assert _segments(tmp_path) == [first] and first.stat().st_size == offset
    g = Festival.open(data_dir=tmp_path)
    assert _views(g) == seen[1] and g.ledger()["sum"] == 0
    g.close()


def test_repair_finds_nothing_to_do_in_a_clean_or_torn_log(tmp_path, capsys):
    _festival(tmp_path)
    (segment,) = _segments(tmp_path)
    with open(segment, "ab") as f:
        f.write(b"\0" * 7)
    before = _files(tmp_path)
    status, out, _ = _run(capsys, "log", "check", "--data", str(tmp_path))
    assert status == 0 and f"a torn tail of 7 bytes at byte {len(before[segment.name]) - 7:,}" in out
    status, out, _ = _run(capsys, "log", "repair", "--data", str(tmp_path), "--at-damage", "--yes")
    assert status == 0 and "no damage: nothing to repair" in out
    assert _files(tmp_path) == before


def _said(capsys, *args: str) -> tuple[int, list[str]]:
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    return status, err.strip().splitlines()


def test_repair_mistakes_are_one_line_and_change_nothing(tmp_path, capsys):
    _festival(tmp_path)
    (segment,) = _segments(tmp_path)
    offset, _, _ = _records(segment)[1]
    before = _files(tmp_path)
    status, lines = _said(capsys, "log", "repair", "--data", str(tmp_path), "--truncate-at",
                          f"{segment.name}:{offset + 1}")
    assert status == 2 and lines == [f"double11 log repair: byte {offset + 1:,} of {segment.name} is not where a "
                                     f"record starts (the nearest that are: {offset:,} and "
                                     f"{_records(segment)[2][0]:,}; its readable records end at byte "
                                     f"{len(before[segment.name]):,} of {len(before[segment.name]):,})"]
    status, lines = _said(capsys, "log", "repair", "--data", str(tmp_path), "--truncate-at", "log-7.d11:16")
    assert status == 2 and lines == [f"double11 log repair: {tmp_path} holds no log segment log-7.d11 (it holds "
                                     f"{segment.name})"]
    empty = tmp_path / "empty"
    empty.mkdir()
    status, lines = _said(capsys, "log", "check", "--data", str(empty))
    assert status == 2 and lines == [f"double11 log check: {empty} holds no command log (no log-*.d11 file): is it "
                                     f"a festival's data folder?"]
    for name, data in before.items():
        assert (tmp_path / name).read_bytes() == data


@pytest.mark.parametrize("args", [["--data", "{missing}", "--at-damage"], ["--data", "{data}", "--truncate-at", "x"],
                                  ["--data", "{data}"]])
def test_repair_usage_mistakes_are_argparse_lines(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["log", "repair", *(a.format(missing=tmp_path / "nope", data=tmp_path) for a in args)])
    _, err = capsys.readouterr()
    assert stopped.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("double11 log repair: error: ")


def test_repair_refuses_a_folder_an_engine_holds(tmp_path, capsys):
    _festival(tmp_path)
    (segment,) = _segments(tmp_path)
    offset, _, _ = _records(segment)[2]
    damaged = _flip(segment, offset + 30)
    held = lock_data_dir(tmp_path)
    try:
        mark_data_dir(held, SERVING)
        for extra in ([], ["--yes"]):
            status, lines = _said(capsys, "log", "repair", "--data", str(tmp_path), "--at-damage", *extra)
            assert status == 2 and lines == [f"double11 log repair: {tmp_path} is in use by engine process "
                                             f"{os.getpid()}: stop the server first"]
    finally:
        os.close(held)
    assert segment.read_bytes() == damaged


@pytest.mark.slow  # a real process
def test_the_command_line_repairs_a_damaged_log(tmp_path):
    seen = _festival(tmp_path)
    (segment,) = _segments(tmp_path)
    offset, _, _ = _records(segment)[4]
    _flip(segment, offset + 3)
    done = subprocess.run([sys.executable, "-m", "double11", "log", "repair", "--data", str(tmp_path),
                           "--at-damage", "--yes"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith(f"dropped {segment} from byte {offset:,} on: records 5 to 6: 1 intact")
    g = Festival.open(data_dir=tmp_path)
    assert _views(g) == seen[4] and g.ledger()["sum"] == 0
    g.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a real server start
def test_serve_on_a_damaged_log_says_so_in_one_line_and_changes_nothing(tmp_path):
    _festival(tmp_path)
    (segment,) = _segments(tmp_path)
    offset, _, _ = _records(segment)[1]
    damaged = _flip(segment, offset + 30)
    done = subprocess.run([sys.executable, "-m", "double11", "serve", "--data", str(tmp_path), "--port",
                           str(_free_port())], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode != 0 and "Traceback" not in done.stderr
    (said,) = [line for line in done.stderr.splitlines() if "cannot open" in line]
    assert said.startswith(f"double11 serve: cannot open the festival: the command log is damaged: {segment} at "
                           f"byte {offset:,}: record 2 does not match its checksum, and 4 intact records")
    assert segment.read_bytes() == damaged
