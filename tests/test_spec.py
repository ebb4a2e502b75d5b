"""The commands' declarations (double11/spec.py, double11/engine/commands.py)
are the source of truth: the OpenAPI document and docs/api.md are rendered from
them, and the hand-written validation (encode.py's JSON edge, the compiled
`batch.validate`, the refusals' words) enforces exactly what they say: each
field at each bound and one past it, missing, of a wrong type."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model import small_catalog

from double11 import Festival, areas, limits
from double11.commands_doc import BEGIN, END, section
from double11.engine import refusals
from double11.engine.batch import Channel, CommandBatch, Op, validate
from double11.engine.encode import encode_commands
from double11.errors import HTTP_STATUS, MESSAGES, Result
from double11.http.openapi import build_openapi
from double11.spec import Command, Field

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_510_329_600_000
_keys = itertools.count()

# ------------------------------------------------------------ what a case is
# (command, the field's JSON path, the field, how its value is made, refused?)
Case = tuple[Command, str, Field, str]
VALUE_CASES = ("low", "high", "below", "above", "missing", "wrong_type")


def _cases() -> list[Case]:
    out: list[Case] = []
    for command in areas.COMMANDS:
        for field in command.fields:
            out.extend((command, field.name, field, how) for how in VALUE_CASES)
            for item in field.items:
                out.extend((command, f"{field.name}[0].{item.name}", item, how) for how in VALUE_CASES)
    return out


CASES = _cases()


def _valid(field: Field, draw: Any) -> Any:
    if field.name == "idempotency_key":
        return f"spec-{next(_keys)}"
    if field.kind == "integer":
        return draw(st.integers(field.low, field.high))
    if field.kind == "string":
        return draw(st.text(alphabet="abc", min_size=field.low, max_size=field.high))
    if field.kind == "choice":
        return draw(st.sampled_from(field.choices))
    n = draw(st.integers(field.low, field.high))
    return [{item.name: _valid(item, draw) for item in field.items} for _ in range(n)]


def _list_of(field: Field, n: int, draw: Any) -> list:
    return [{item.name: _valid(item, draw) for item in field.items} for _ in range(n)]


def _value(field: Field, how: str, draw: Any) -> Any:
    """The value of `field` for the case `how` (only called when not missing)."""
    if how == "wrong_type":
        wrong = {"integer": ["1", 1.0, None, True], "string": [5, None, ["k"]],
                 "choice": [1, None, True], "list": ["x", {"sku": 1}, None]}[field.kind]
        return draw(st.sampled_from(wrong))
    if field.kind == "integer":
        return {"low": field.low, "high": field.high, "below": field.low - 1, "above": field.high + 1}[how]
    if field.kind == "string":
        size = {"low": field.low, "high": field.high, "below": field.low - 1, "above": field.high + 1}[how]
        # unique, so the engine never answers a retry: a key of one character is one of many letters
        n = next(_keys)
        if size <= 1:
            return chr(0x4E00 + n % 20_000)[:size]
        return f"{n}-".ljust(size, "k")
    if field.kind == "choice":
        if how in ("low", "high"):
            return draw(st.sampled_from(field.choices))
        return draw(st.sampled_from(["ZZ", "cn", "tablet", "Mobile", ""]))
    n = {"low": field.low, "high": field.high, "below": field.low - 1, "above": field.high + 1}[how]
    return _list_of(field, n, draw)


def _command(case: Case, draw: Any) -> dict:
    command, path, field, how = case
    cmd: dict[str, Any] = {"op": command.op}
    for f in command.fields:
        cmd[f.name] = _valid(f, draw)
    if path == "idempotency_key" and how in ("low", "high"):
        cmd[path] = _value(field, how, draw)  # a fresh key of that length
        return cmd
    holder, name = cmd, field.name
    if "[0]." in path:
        holder = cmd[path.split("[", 1)[0]][0]
    if how == "missing":
        del holder[name]
    else:
        holder[name] = _value(field, how, draw)
    return cmd


def _expected(field: Field, how: str) -> Result | None:
    """The code the declaration says the case gets (None: accepted)."""
    if how in ("low", "high"):
        return None
    if how == "below" and field.code_below is not None:
        return field.code_below
    if how == "above" and field.code_above is not None:
        return field.code_above
    return field.code


def _check_words(message: str, path: str, field: Field) -> None:
    assert path in message and field.wanted in message, message


@pytest.fixture(scope="module")
def festival():
    f = Festival.open(small_catalog())
    yield f
    f.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(CASES), data=st.data())
def test_the_json_edge_enforces_exactly_the_declaration(festival, case: Case, data):
    command, path, field, how = case
    cmd = _command(case, data.draw)
    expected = _expected(field, how)
    # the JSON edge, then the compiled check, which keeps the edge's verdict
    batch = encode_commands([cmd])
    validate(batch)
    code = Result(int(batch.invalid[0]))
    if expected is None:
        assert code == Result.ok, batch.notes
    else:
        assert code == expected
        _check_words(batch.notes[0], path, field)
    # the Python API, through the engine: a well-formed command is answered by
    # its state (ok or one of the command's declared results), never its shape
    (result,) = festival.execute([cmd], T0)
    if expected is None:
        answered = Result[result["body"]["error"]["code"]] if "error" in result["body"] else Result.ok
        assert answered == Result.ok or answered in command.results, result
        assert result["status"] == (command.success_status if answered == Result.ok else HTTP_STATUS[answered])
    else:
        assert result["status"] == HTTP_STATUS[expected]
        assert result["body"]["error"]["code"] == expected.name
        _check_words(result["body"]["error"]["message"], path, field)


# ------------------------------------------- the binary batch's columns
# a field's column in a batch: bad values the columns can hold, set on a well-formed command
_TARGET = ("buyer", "checkout", "order", "sku")
_COLUMN_CASES = [(command, field, bad)
                 for command in areas.COMMANDS for field in command.fields
                 if field.kind == "integer" for bad in (field.low - 1, field.low - 2)]
_COLUMN_CASES += [(command, field, field.high + 1)
                  for command in areas.COMMANDS for field in command.fields
                  if field.kind == "integer" and field.high < limits.id_max]


def _column_batch(command: Command, field: Field, bad: int, draw: Any) -> CommandBatch:
    cmd = {"op": command.op, **{f.name: _valid(f, draw) for f in command.fields}}
    batch = CommandBatch.from_bytes(encode_commands([cmd]).to_bytes())
    assert batch.invalid[0] == 0
    if field.name in _TARGET and field.where == "path" or field.name == "buyer":
        batch.target[0] = bad
    else:
        batch.amount[0] = bad
    batch.invalid[0] = 0
    return batch


@settings(max_examples=100, deadline=None)
@given(case=st.sampled_from(_COLUMN_CASES), data=st.data())
def test_the_compiled_check_of_the_columns_enforces_the_declared_bounds(case, data):
    command, field, bad = case
    batch = _column_batch(command, field, bad, data.draw)
    validate(batch)
    assert Result(int(batch.invalid[0])) == field.code
    code, message = refusals.shape_message(batch, 0, 0)
    assert code == field.code
    _check_words(message, field.name, field)


@pytest.mark.parametrize("past", [-1, 1, -2])
def test_the_compiled_check_of_a_line_enforces_its_declared_qty(past):
    qty = areas.BY_OP["checkout"].field("lines").items[1]
    bad = qty.high + past if past > 0 else qty.low + past  # one or two past a bound
    cmd = {"op": "checkout", "idempotency_key": "k", "buyer": 1, "country": "CN", "channel": "pc",
           "lines": [{"sku": 1, "qty": 1}, {"sku": 2, "qty": 1}]}
    batch = CommandBatch.from_bytes(encode_commands([cmd]).to_bytes())
    batch.qty[1] = bad
    validate(batch)
    assert Result(int(batch.invalid[0])) == qty.code
    code, message = refusals.shape_message(batch, 0, 0)
    assert code == qty.code
    _check_words(message, "lines[1].qty", qty)


@pytest.mark.parametrize("field_name, column, bad", [("country", "country", 0), ("channel", "channel", 3)])
def test_the_compiled_check_of_a_choice_enforces_its_declared_choices(field_name, column, bad):
    field = areas.BY_OP["checkout"].field(field_name)
    cmd = {"op": "checkout", "idempotency_key": "k", "buyer": 1, "country": "CN", "channel": "pc",
           "lines": [{"sku": 1, "qty": 1}]}
    batch = CommandBatch.from_bytes(encode_commands([cmd]).to_bytes())
    getattr(batch, column)[0] = bad
    validate(batch)
    assert Result(int(batch.invalid[0])) == field.code
    code, message = refusals.shape_message(batch, 0, 0)
    assert code == field.code
    _check_words(message, field_name, field)


# ------------------------------------------------------- the registry itself
def test_the_registry_declares_every_op_of_the_batch_format_in_its_order():
    assert [c.op for c in areas.COMMANDS] == [op.name for op in Op]
    assert areas.BY_OP["checkout"].field("channel").choices == tuple(ch.name for ch in Channel)


def test_the_areas_own_every_table_of_the_engine_but_the_idempotency_keys(festival):
    owned = [table for area in areas.AREAS for table in area.tables]
    assert len(owned) == len(set(owned))  # no table has two owners
    assert set(owned) | {"keys"} == set(festival.engine.tables())


def test_every_declared_result_has_an_http_status_and_no_shape_code_is_a_state_result():
    for command in areas.COMMANDS:
        assert set(command.shape_codes) <= refusals.SHAPE_CODES
        assert not set(command.results) & refusals.SHAPE_CODES
        assert all(code in HTTP_STATUS for code in command.results)


# ------------------------------------------------- what is rendered from it
def test_the_api_page_holds_the_command_table_as_rendered_from_the_declarations():
    text = (ROOT / "docs/api.md").read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == section(), "run `python -m double11.commands_doc` and paste its output"


def test_the_openapi_document_gives_each_command_its_declared_route_fields_bounds_and_results():
    doc = build_openapi()
    schemas = doc["components"]["schemas"]
    for command in areas.COMMANDS:
        op = doc["paths"][command.route]["post"]
        assert [p["name"] for p in op.get("parameters", [])] == [f.name for f in command.path_fields]
        body = schemas[command.op.capitalize() + "Request"]
        assert body["required"] == [f.name for f in command.body_fields]
        in_batch = schemas[command.op.capitalize() + "Command"]
        assert in_batch["required"] == ["op", *(f.name for f in command.fields)]
        for field in command.fields:
            schema = in_batch["properties"][field.name]
            if field.kind == "integer":
                assert (schema["minimum"], schema["maximum"]) == (field.low, field.high)
            elif field.kind == "list":
                assert (schema["minItems"], schema["maxItems"]) == (field.low, field.high)
                for item in field.items:
                    bounds = schema["items"]["properties"][item.name]
                    assert (bounds["minimum"], bounds["maximum"]) == (item.low, item.high)
        documented = {code for status, answer in op["responses"].items() if status != str(command.success_status)
                      for code in answer["description"].split(", ")}
        assert {c.name for c in (*command.shape_codes, *command.results)} <= documented
        assert str(command.success_status) in op["responses"]
    assert len(schemas["BatchCommand"]["oneOf"]) == len(areas.COMMANDS)


def test_a_bound_reads_the_same_in_a_refusal_the_document_and_the_page():
    qty = areas.BY_OP["checkout"].field("lines").items[1]
    assert refusals.LINE_QTY_WANTED == qty.wanted == f"1..{limits.line_qty_max}"
    batch = encode_commands([{"op": "checkout", "idempotency_key": "k", "buyer": 1, "country": "CN",
                              "channel": "pc", "lines": [{"sku": 1, "qty": limits.line_qty_max + 1}]}])
    assert batch.notes[0] == f"lines[0].qty must be {qty.wanted}, got {limits.line_qty_max + 1}"
    assert f"qty ({qty.wanted})" in section()
    assert np.int64(qty.high) == limits.line_qty_max


def test_a_commands_target_column_holds_its_path_id_else_its_first_id():
    assert {Op(op).name: name for op, name in refusals.TARGET_FIELD.items()} == {
        "checkout": "buyer", "pay": "checkout", "cancel": "checkout", "confirm": "order", "refund": "order",
        "restock": "sku"}
    for command in areas.COMMANDS:
        assert command.target.is_id
        assert command.target in (command.path_fields or command.fields)


def test_the_generic_message_of_a_shape_code_quotes_no_bound_of_its_own():
    # the bounds live in the declarations; the detailed message quotes them
    for command in areas.COMMANDS:
        for code in command.shape_codes:
            message = MESSAGES[code]
            assert not any(ch.isdigit() for ch in message), message
            for field in (*command.fields, *(item for f in command.fields for item in f.items)):
                assert field.wanted not in message, (message, field.wanted)
