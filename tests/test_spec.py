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
from double11.errors import MESSAGES, Result
from double11.http.openapi import build_openapi
from double11.spec import Command, Field
from double11.statuses import HTTP_STATUS

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_510_329_600_000
_keys = itertools.count()

# ------------------------------------------------------------ what a case is
# (command, the field's JSON path, the field, how its value is made, refused?)
Case = tuple[Command, str, Field, str]
VALUE_CASES = ("low", "high", "below", "above", "missing", "wrong_type")


def _scalar_items(field: Field) -> bool:
    """A list of one-field items holds them bare (`merchants: [10, 20]`), not as objects."""
    return field.kind == "list" and len(field.items) == 1


def _item_path(field: Field, item: Field) -> str:
    return f"{field.name}[0]" if _scalar_items(field) else f"{field.name}[0].{item.name}"


def _cases() -> list[Case]:
    out: list[Case] = []
    for command in areas.COMMANDS:
        for field in command.fields:
            # a list that may be empty has no length below its bound
            hows = [how for how in VALUE_CASES if not (field.kind == "list" and how == "below" and field.low == 0)]
            out.extend((command, field.name, field, how) for how in hows)
            for item in field.items:
                # a bare item cannot be missing from its place in the list
                item_hows = [how for how in VALUE_CASES if not (_scalar_items(field) and how == "missing")]
                out.extend((command, _item_path(field, item), item, how) for how in item_hows)
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
    # a list holds at least one item, so that each item's cases have one to change
    n = draw(st.integers(max(field.low, 1), field.high))
    return _list_of(field, n, draw)


def _list_of(field: Field, n: int, draw: Any) -> list:
    if _scalar_items(field):  # ids, none repeated
        item = field.items[0]
        return draw(st.lists(st.integers(item.low, item.high), min_size=n, max_size=n, unique=True))
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
        if size <= 1 and field.name == "idempotency_key":
            return chr(0x4E00 + n % 20_000)[:size]
        return f"{n}-".ljust(size, "k")[-size:] if size > 0 else ""
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
    elif "[0]" in path and _scalar_items(command.field(path.split("[", 1)[0])):
        items = cmd[path.split("[", 1)[0]]
        items[0] = _value(field, how, draw)
        items[1:] = [x for x in items[1:] if x != items[0]]  # the case's item is the only one of its value
    else:
        holder, name = cmd, field.name
        if "[0]." in path:
            holder = cmd[path.split("[", 1)[0]][0]
        if how == "missing":
            del holder[name]
        else:
            holder[name] = _value(field, how, draw)
    _fit(command, cmd, path, draw)
    return cmd


# ------------------------------------ the rules between an area command's fields
_T = limits.festival_time_ms_max
# (opens, closes): each pair of a command's times that must come in this order
_WINDOWS = {"coupon_template": (("grant_from", "grant_until"), ("use_from", "use_until"), ("grant_from", "use_until")),
            "threshold_discount": (("from", "until"),), "deal": (("from", "until"),)}


# the signed count each move takes: never 0 (its check refuses 0)
_MOVED = {"coupon_budget": "count", "deal_qty": "qty"}


def _int(cmd: dict, name: str) -> int | None:
    v = cmd.get(name)
    return v if type(v) is int else None


def _fit(command: Command, cmd: dict, path: str, draw: Any) -> None:
    """Redraws the fields other than the case's (`path`) so that the command
    keeps its rules between fields (`Command.check`) where the case's value
    allows: windows in order, a store coupon's merchant, a budget that covers
    a discount, a threshold's off below its every."""
    if command.op == "coupon_template":
        if path == "merchant":  # a merchant (of any value) goes with a store coupon, none with a platform one
            cmd["kind"] = "store" if "merchant" in cmd else "platform"
        elif cmd.get("kind") == "store":
            cmd["merchant"] = draw(st.integers(1, limits.id_max))
        else:
            cmd.pop("merchant", None)
        discount, budget = _int(cmd, "discount_fen"), _int(cmd, "budget_fen")
        if path != "budget_fen" and discount is not None and budget is not None and 0 < budget < discount:
            cmd["budget_fen"] = discount
    if command.op == "threshold_discount":
        every, off = _int(cmd, "every_fen"), _int(cmd, "off_fen")
        high = command.field("every_fen").high
        if path == "off_fen":
            if off is not None:
                cmd["every_fen"] = draw(st.integers(min(max(off + 1, 1), high), high))
        elif path == "every_fen":
            if every is not None:
                cmd["off_fen"] = draw(st.integers(1, max(every - 1, 1)))
        else:
            cmd["every_fen"] = every = draw(st.integers(2, high))
            cmd["off_fen"] = draw(st.integers(1, every - 1))
    moved = _MOVED.get(command.op)
    if moved is not None and path != moved and cmd.get(moved) == 0:
        cmd[moved] = draw(st.sampled_from([-1, 1]))
    pairs = _WINDOWS.get(command.op, ())
    # the case's own time, when it is one, bounds the times it is paired with
    pinned = _int(cmd, path) if any(path in pair for pair in pairs) else None
    for opens in dict.fromkeys(o for o, _ in pairs):
        if opens != path:
            upper = _T - 1 if pinned is None or (opens, path) not in pairs else pinned - 1
            cmd[opens] = draw(st.integers(0, max(0, upper)))
    for closes in dict.fromkeys(c for _, c in pairs):
        if closes != path:
            lower = max([1] + [o + 1 for o in (_int(cmd, o) for o, c in pairs if c == closes) if o is not None])
            cmd[closes] = draw(st.integers(min(lower, _T), _T))


def _values(command: Command, cmd: dict) -> dict[str, Any]:
    """The command's fields as its `check` reads them: a choice by its index,
    a field left out as its default."""
    values: dict[str, Any] = {}
    for f in command.arg_fields:
        if f.name not in cmd:
            values[f.name] = [] if f.kind == "list" else f.default
        elif f.kind == "choice":
            values[f.name] = f.choices.index(cmd[f.name])
        else:
            values[f.name] = cmd[f.name]
    return values


def _broken_rule(command: Command, cmd: dict) -> str | None:
    """The words of the first rule between fields that a well-shaped command breaks."""
    return command.check(_values(command, cmd)) if command.check is not None else None


def _expected(field: Field, how: str) -> Result | None:
    """The code the declaration says the case gets from the field's own
    bounds (None: accepted)."""
    if how in ("low", "high") or (how == "missing" and field.optional):
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


def _rule_code(command: Command) -> Result:
    """What a command refuses a broken rule between its fields with: the one
    code all its fields share."""
    (code,) = {f.code for f in command.arg_fields}
    return code


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(CASES), data=st.data())
def test_the_json_edge_enforces_exactly_the_declaration(festival, case: Case, data):
    command, path, field, how = case
    cmd = _command(case, data.draw)
    expected = _expected(field, how)
    # a value within its bounds may still break a rule between fields (an
    # opening time at the last moment leaves no room for the closing one)
    rule = _broken_rule(command, cmd) if expected is None else None
    if rule is not None:
        expected = _rule_code(command)

    def check_words(message: str) -> None:
        if rule is not None:
            assert message == rule
        else:
            _check_words(message, path, field)

    # the JSON edge, then the compiled check, which keeps the edge's verdict
    batch = encode_commands([cmd])
    validate(batch)
    code = Result(int(batch.invalid[0]))
    if expected is None:
        assert code == Result.ok, batch.notes
    else:
        assert code == expected
        check_words(batch.notes[0])
    # the Python API, through the engine: a well-formed command is answered by
    # its state (ok or one of the command's declared results), never its shape
    (result,) = festival.execute([cmd], T0)
    if expected is None:
        answered = Result[result["body"]["error"]["code"]] if "error" in result["body"] else Result.ok
        assert answered == Result.ok or answered in command.results, result
        assert result["status"] == (HTTP_STATUS[command.success] if answered == Result.ok else HTTP_STATUS[answered])
    else:
        assert result["status"] == HTTP_STATUS[expected]
        assert result["body"]["error"]["code"] == expected.name
        check_words(result["body"]["error"]["message"])


# ------------------------------------------- the binary batch's columns
# a field's column in a batch: bad values the columns can hold, set on a well-formed command
_TARGET = ("buyer", "checkout", "order", "sku")
_CORE = [command for command in areas.COMMANDS if not command.in_args]
_COLUMN_CASES = [(command, field, bad)
                 for command in _CORE for field in command.fields
                 if field.kind == "integer" for bad in (field.low - 1, field.low - 2)]
_COLUMN_CASES += [(command, field, field.high + 1)
                  for command in _CORE for field in command.fields
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


# ------------------------------------------- an area command's args in a binary batch
# (command, field, item or None, the bad value: for a list without an item, its count)
ArgCase = tuple[Command, Field, Field | None, Any]


def _arg_cases() -> list[ArgCase]:
    out: list[ArgCase] = []
    for command in areas.COMMANDS:
        for field in command.arg_fields:
            if field.kind == "integer":
                bads = [field.low - 1, field.low - 2] + ([field.high + 1] if field.high < limits.id_max else [])
                # a field left out is sent as its default: that one is not bad
                out += [(command, field, None, bad) for bad in bads if not (field.optional and bad == field.default)]
            elif field.kind == "choice":  # a choice travels as its index
                out += [(command, field, None, -1), (command, field, None, len(field.choices))]
            elif field.kind == "string":  # too short, or not printable ASCII
                out += [(command, field, None, ""), (command, field, None, "a\x01"), (command, field, None, "\u00e9")]
            else:
                out.append((command, field, None, field.high + 1))
                out += [(command, field, item, bad) for item in field.items
                        for bad in (item.low - 1, item.low - 2)]
    return out


_ARG_CASES = _arg_cases()


def _string_args(text: str, words: int) -> list[int]:
    raw = text.encode("utf-8").ljust(8 * words, b"\0")
    return [int.from_bytes(raw[8 * w: 8 * w + 8], "little", signed=True) for w in range(words)]


def _args_batch(command: Command, args: list[int], draw: Any) -> CommandBatch:
    """A binary batch of one command of `command`'s op with these args, as a gateway sends it."""
    cmd = {"op": command.op, **{f.name: _valid(f, draw) for f in command.fields}}
    _fit(command, cmd, "", draw)
    well_formed = CommandBatch.from_bytes(encode_commands([cmd]).to_bytes())
    assert well_formed.invalid[0] == 0
    columns = {name: getattr(well_formed, name) for name in ("op", "invalid", "channel", "lines", "country", "key",
                                                             "target", "amount", "sku", "qty")}
    batch = CommandBatch(**columns, args=np.array([len(args)], dtype=np.uint8), arg=np.array(args, dtype=np.int64))
    return CommandBatch.from_bytes(batch.to_bytes())


def _well_formed_args(command: Command, draw: Any) -> list[int]:
    cmd = {"op": command.op, **{f.name: _valid(f, draw) for f in command.fields}}
    _fit(command, cmd, "", draw)
    batch = encode_commands([cmd])
    assert batch.invalid[0] == 0, batch.notes
    return batch.arg.tolist()


def _shaped(batch: CommandBatch) -> tuple[Result, str]:
    """The first command's shape refusal and its words (it has one)."""
    shaped = refusals.shape_message(batch, 0, 0)
    assert shaped is not None
    return shaped


@settings(max_examples=150, deadline=None)
@given(case=st.sampled_from(_ARG_CASES), data=st.data())
def test_the_check_of_an_area_commands_args_enforces_the_declared_bounds(case: ArgCase, data):
    command, field, item, bad = case
    args = _well_formed_args(command, data.draw)
    at = command.arg_at(field.name)
    if field.kind == "string":
        args[at: at + field.arg_words] = _string_args(bad, field.arg_words)
    elif field.kind == "list" and item is None:  # one item too many
        args[at:] = [bad, *range(1, bad + 1)]
    elif item is not None:
        if args[at] == 0:  # give the list an item to spoil
            args[at:] = [1, item.high]
        args[at + 1] = bad
    else:
        args[at] = bad
    batch = _args_batch(command, args, data.draw)
    assert batch.invalid[0] == field.code  # from_bytes validated it
    code, message = _shaped(batch)
    assert code == field.code
    if item is not None:
        _check_words(message, f"{field.name}[0]", item)
    elif field.kind == "list":
        assert f"{field.name} must be a list of {field.wanted}" in message, message
    else:
        _check_words(message, field.name, field)


@settings(max_examples=60, deadline=None)
@given(command=st.sampled_from([c for c in areas.COMMANDS if c.op in _WINDOWS]), data=st.data())
def test_the_check_of_an_area_commands_args_keeps_its_rules_between_fields(command: Command, data):
    # every window closed before it opens: a rule each of these commands has
    args = _well_formed_args(command, data.draw)
    pairs = _WINDOWS[command.op]
    for opens, closes in pairs:
        args[command.arg_at(opens)], args[command.arg_at(closes)] = _T, 0
    batch = _args_batch(command, args, data.draw)
    assert batch.invalid[0] == _rule_code(command)
    code, message = _shaped(batch)
    assert code == _rule_code(command)
    assert " must be before " in message, message


@settings(max_examples=40, deadline=None)
@given(command=st.sampled_from([c for c in areas.COMMANDS if c.in_args]), extra=st.sampled_from([-1, 1]),
       data=st.data())
def test_the_check_of_an_area_commands_args_counts_them(command: Command, extra: int, data):
    args = _well_formed_args(command, data.draw)
    args = args[:extra] if extra < 0 else [*args, 0]
    if any(f.kind == "list" for f in command.arg_fields):  # a list's count says how many args follow it
        args = args[:command.arg_at(next(f.name for f in command.arg_fields if f.kind == "list"))]
    batch = _args_batch(command, args, data.draw)
    code, message = _shaped(batch)
    assert batch.invalid[0] == code == command.arg_fields[0].code
    assert message.startswith(f"{command.op} takes "), message


@pytest.mark.parametrize("coupons, words", [
    ([0], "coupons[0] must be a positive integer"),
    ([3, -1], "coupons[1] must be a positive integer"),
    ([5, 5], "coupons[1] repeats coupon 5"),
    (list(range(1, limits.checkout_coupons_max + 2)), f"coupons must be a list of 0..{limits.checkout_coupons_max}"),
])
def test_the_compiled_check_of_a_checkouts_coupons_enforces_their_declaration(coupons, words):
    field = areas.BY_OP["checkout"].field("coupons")
    cmd = {"op": "checkout", "idempotency_key": "k", "buyer": 1, "country": "CN", "channel": "pc",
           "lines": [{"sku": 1, "qty": 1}], "coupons": [1]}
    sent = encode_commands([cmd])
    sent.args[0], sent.arg = len(coupons), np.array(coupons, dtype=np.int64)
    batch = CommandBatch.from_bytes(sent.to_bytes())
    assert Result(int(batch.invalid[0])) == field.code
    code, message = _shaped(batch)
    assert code == field.code and message.startswith(words), message


# ------------------------------------------------------- the registry itself
def test_the_registry_declares_every_op_of_the_batch_format_in_its_order():
    # the core's commands are the batch format's ops, numbered as Op numbers them
    core = [c for c in areas.COMMANDS if not c.in_args]
    assert [(c.op, c.number) for c in core] == [(op.name, int(op)) for op in Op]
    # every command has a number of its own, never 0; an area's are outside Op's
    numbers = [c.number for c in areas.COMMANDS]
    assert len(numbers) == len(set(numbers)) and 0 not in numbers
    assert all(c.number not in {int(op) for op in Op} for c in areas.COMMANDS if c.in_args)
    assert all(areas.IN_ARGS[c.number] == c.in_args for c in areas.COMMANDS)
    assert areas.BY_OP["checkout"].field("channel").choices == tuple(ch.name for ch in Channel)


def test_the_areas_own_every_table_of_the_engine_but_the_idempotency_keys(festival):
    owned = [table for area in areas.AREAS for table in area.tables]
    assert len(owned) == len(set(owned))  # no table has two owners
    assert set(owned) | {"keys"} == set(festival.engine.tables())


def test_every_declared_result_has_an_http_status_and_no_shape_code_is_a_state_result():
    for command in areas.COMMANDS:
        assert all(code in HTTP_STATUS for code in command.results)
        assert all(HTTP_STATUS[code] == 400 for code in command.shape_codes)
        if not command.in_args:
            assert set(command.shape_codes) <= refusals.SHAPE_CODES
            assert not set(command.results) & refusals.SHAPE_CODES
        else:
            # an area's fields refuse with the core's codes or codes of the area's own
            own = set(command.shape_codes) - refusals.SHAPE_CODES
            assert not own & {code for c in areas.COMMANDS if not c.in_args for code in (*c.shape_codes, *c.results)}


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
        # a field that may be left out is not required
        assert body["required"] == [f.name for f in command.body_fields if not f.optional]
        assert list(body["properties"]) == [f.name for f in command.body_fields]
        in_batch = schemas[command.op.capitalize() + "Command"]
        assert in_batch["required"] == ["op", *(f.name for f in command.fields if not f.optional)]
        path_schemas = {p["name"]: p["schema"] for p in op.get("parameters", [])}
        for field in command.fields:
            # in a batch, the field's JSON type (a value out of its bounds is the command's own refusal)
            typed = in_batch["properties"][field.name]
            assert typed["type"] == {"integer": "integer", "string": "string", "choice": "string",
                                     "list": "array"}[field.kind]
            # the bounds: the single request's (its body, or its path)
            schema = body["properties"][field.name] if field.where == "body" else path_schemas[field.name]
            if field.kind == "integer":
                assert (schema["minimum"], schema["maximum"]) == (field.low, field.high)
            elif field.kind == "string":
                assert (schema["type"], schema["minLength"], schema["maxLength"]) == ("string", field.low, field.high)
            elif field.kind == "choice":
                assert schema["enum"] == list(field.choices)
            elif _scalar_items(field):  # bare items: [10, 20]
                assert (schema["minItems"], schema["maxItems"]) == (field.low, field.high)
                item = field.items[0]
                assert (schema["items"]["minimum"], schema["items"]["maximum"]) == (item.low, item.high)
            else:
                assert (schema["minItems"], schema["maxItems"]) == (field.low, field.high)
                for item in field.items:
                    bounds = schema["items"]["properties"][item.name]
                    assert (bounds["minimum"], bounds["maximum"]) == (item.low, item.high)
            if field.optional:
                assert schema["default"] == ([] if field.kind == "list" else field.default)
        # the answer on success is its Struct's schema
        answer = op["responses"][str(HTTP_STATUS[command.success])]["content"]["application/json"]["schema"]
        assert answer == {"$ref": f"#/components/schemas/{command.answer.__name__}"}
        assert command.answer.__name__ in schemas
        documented = {code for status, answer in op["responses"].items() if status != str(HTTP_STATUS[command.success])
                      for code in answer["description"].split(", ")}
        assert {c.name for c in (*command.shape_codes, *command.results)} <= documented
        assert str(HTTP_STATUS[command.success]) in op["responses"]
    assert len(schemas["BatchCommand"]["oneOf"]) == len(areas.COMMANDS)
    # the threshold's and the deal's `from` is named so on the wire, not as Python's `from_`
    assert "from" in schemas["ThresholdView"]["properties"] and "from" in schemas["DealView"]["properties"]


@pytest.mark.parametrize("route, code", [
    ("/v1/coupon-templates/{template}", Result.unknown_template), ("/v1/coupons/{coupon}", Result.unknown_coupon),
    ("/v1/buyers/{buyer}/coupons", None), ("/v1/deals/{deal}", Result.unknown_deal),
    ("/v1/threshold-discounts/{threshold}", None)])
def test_the_openapi_document_gives_the_promotions_views_their_answers_and_refusals(route, code):
    doc = build_openapi()
    view = doc["paths"][route]["get"]
    assert [p["name"] for p in view["parameters"]] == [route.split("{")[1].split("}")[0]]
    answer = view["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert answer in doc["components"]["schemas"]
    documented = {c for answer in view["responses"].values() for c in answer["description"].split(", ")}
    assert {"invalid_request", "not_found"} | ({code.name} if code else set()) <= documented


def test_a_bound_reads_the_same_in_a_refusal_the_document_and_the_page():
    qty = areas.BY_OP["checkout"].field("lines").items[1]
    assert refusals.LINE_QTY_WANTED == qty.wanted == f"1..{limits.line_qty_max}"
    batch = encode_commands([{"op": "checkout", "idempotency_key": "k", "buyer": 1, "country": "CN",
                              "channel": "pc", "lines": [{"sku": 1, "qty": limits.line_qty_max + 1}]}])
    assert batch.notes[0] == f"lines[0].qty must be {qty.wanted}, got {limits.line_qty_max + 1}"
    assert f"qty ({qty.wanted})" in section()
    assert np.int64(qty.high) == limits.line_qty_max


def test_a_commands_target_column_holds_its_path_id_else_its_first_id():
    assert {areas.BY_NUMBER[op].op: name for op, name in refusals.TARGET_FIELD.items()} == {
        "checkout": "buyer", "pay": "checkout", "cancel": "checkout", "confirm": "order", "refund": "order",
        "restock": "sku", "grant": "template", "coupon_budget": "template", "deal_qty": "deal", "release": "sku"}
    for command in areas.COMMANDS:
        if command.in_args and not command.path_fields:  # an operator's command names no row: target 0
            assert int(command.number) not in refusals.TARGET_FIELD
            continue
        assert command.target.is_id
        assert command.target in (command.path_fields or command.fields)
        assert refusals.TARGET_FIELD[command.number] == command.target.name


def test_the_generic_message_of_a_shape_code_quotes_no_bound_of_its_own():
    # the bounds live in the declarations; the detailed message quotes them
    for command in areas.COMMANDS:
        for code in command.shape_codes:
            message = MESSAGES[code]
            assert not any(ch.isdigit() for ch in message), message
            for field in (*command.fields, *(item for f in command.fields for item in f.items)):
                assert field.wanted not in message, (message, field.wanted)
