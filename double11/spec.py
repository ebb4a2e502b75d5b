"""The words a business area declares its commands in: fields, bounds, results.

A command's declaration is the one place its shape is written: the OpenAPI
document, the bound each refusal quotes (double11/engine/refusals.py) and the
command table of docs/api.md are rendered from it.  The JSON validation
(double11/engine/encode.py) reads each field's bounds, choices and code from
it, its checks written out by hand for speed; the compiled checks
(batch.validate, the single-request lane) are written by hand; a property
test (tests/test_spec.py) holds them all to the declaration.

Plain frozen dataclasses: a declaration is data, read at import time and on
error paths, never on a hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from double11 import limits
from double11.access.roles import OPERATOR_ONLY, Allowed
from double11.errors import Result

Kind = Literal["integer", "string", "choice", "list"]
Where = Literal["body", "path"]


@dataclass(frozen=True)
class Field:
    """One field of a command.  `code` is what a missing, mistyped or out of
    bounds value is refused with; a list may answer other codes for too few
    (`code_below`) or too many (`code_above`) items."""

    name: str
    kind: Kind
    meaning: str
    code: Result
    low: int = 0
    high: int = 0
    # path: in the route of a single request (a batch's command carries it)
    where: Where = "body"
    choices: tuple[str, ...] = ()
    items: tuple[Field, ...] = ()  # a list's item: an object of these fields
    unit: str = ""  # what a string's or a list's bounds count
    # the bound in words, where a range cannot say it (a code list too long to quote)
    bound_words: str = ""
    code_below: Result | None = None
    code_above: Result | None = None
    # a field that may be left out: its value is then `default` (for a list: empty)
    optional: bool = False
    default: int = 0
    # an id the engine makes a row before its loop ("merchant", "sku"; -1 when
    # unknown) where an area's command carries it in args
    lookup: Literal["merchant", "sku", None] = None

    @property
    def wanted(self) -> str:
        """The bound as a refusal quotes it: `qty must be <wanted>, got 0`."""
        if self.bound_words:
            return self.bound_words
        if self.kind == "integer" and self.low == 1 and self.high == limits.id_max:
            return f"a positive integer up to {self.high}"
        if self.kind == "integer":
            return f"{self.low}..{self.high}"
        if self.kind == "choice":
            return " or ".join(f"'{choice}'" for choice in self.choices)
        return f"{self.low}..{self.high} {self.unit}"

    @property
    def is_id(self) -> bool:
        """A reference to a row by its id (as `id_field` declares one)."""
        return (self.kind == "integer" and self.code == Result.invalid_request and self.low == 1
                and self.high == limits.id_max)

    @property
    def arg_words(self) -> int:
        """How many of a batch's args the field takes when its command carries
        it there (`Command.in_args`): a string's bytes in 8-byte words, a
        list's items after its count, one otherwise."""
        if self.kind == "string":
            return (self.high + 7) // 8
        if self.kind == "list":  # its count, then its items (at most `high`)
            return 1 + self.high * max(1, len(self.items))
        return 1

    @property
    def codes(self) -> tuple[Result, ...]:
        """Every code a bad value of this field (or of its items) is refused with."""
        found = [self.code, *(c for c in (self.code_below, self.code_above) if c is not None)]
        for item in self.items:
            found.extend(item.codes)
        return tuple(dict.fromkeys(found))


def id_field(name: str, meaning: str, where: Where = "body") -> Field:
    """A reference to a row by its id (ids are rows + 1, int64)."""
    return Field(name, "integer", meaning, Result.invalid_request, low=1, high=limits.id_max, where=where)


def string_words(text: str, words: int) -> list[int]:
    """A string field's args: its ASCII bytes, zero-padded, as little-endian int64 words."""
    raw = text.encode("ascii").ljust(8 * words, b"\0")
    return [int.from_bytes(raw[8 * w: 8 * w + 8], "little", signed=True) for w in range(words)]


def string_of(words: Any) -> str:
    """A string field's text from its words (zero bytes pad it)."""
    raw = b"".join(int(w).to_bytes(8, "little", signed=True) for w in words)
    return raw.rstrip(b"\0").decode("ascii", errors="replace")


# every command of every area carries one: a retry with the same key and body
# answers the first result again
IDEMPOTENCY_KEY = Field(
    "idempotency_key", "string", "the client's name for this command; a retry reuses it",
    Result.invalid_idempotency_key, low=1, high=limits.idempotency_key_chars_max, unit="characters")


@dataclass(frozen=True)
class Command:
    """One command: its op, its single-request route, its fields in the order
    they are checked, its answer on success (a msgspec Struct: the body) and
    the refusals of state it may answer (the shape refusals come from its
    fields)."""

    op: str
    route: str
    summary: str
    fields: tuple[Field, ...]
    success: Result  # its code when done: Result.created where it makes a new thing, else ok
    answer: type
    results: tuple[Result, ...]
    # the op's number in a batch's `op` column and the log (never reused)
    number: int = 0
    # an area's command carries its fields but the path's id in the batch's
    # `args` (encoded as `Command.arg_fields` lays out), not in named columns
    in_args: bool = False
    # the rules between fields (`from` before `until`), on the values as
    # decoded: the words of the first one broken, or None
    check: Callable[[dict[str, Any]], str | None] | None = None
    # who may call it besides the operator, and the field that says whose
    # thing it touches (a buyer, a merchant, or a checkout, order or SKU,
    # whose buyer or merchant the engine looks up): double11/access
    allowed: Allowed = OPERATOR_ONLY
    owner: str = ""

    @property
    def body_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.where == "body")

    @property
    def path_fields(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if f.where == "path")

    @property
    def shape_codes(self) -> tuple[Result, ...]:
        """The codes a malformed command of this op is refused with."""
        return tuple(dict.fromkeys(code for f in self.fields for code in f.codes))

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    @property
    def arg_fields(self) -> tuple[Field, ...]:
        """The fields carried in args, in order: all but the path's id and the key."""
        if not self.in_args:
            return ()
        carried = [f for f in self.fields if f.where == "body" and f.name != IDEMPOTENCY_KEY.name]
        # a list is variable in length: it goes last, so every other field has a fixed place
        return tuple(sorted(carried, key=lambda f: f.kind == "list"))

    def arg_at(self, name: str) -> int:
        """Where field `name` starts in a command's args (fixed-size fields
        first: a list, if any, is the last field)."""
        at = 0
        for f in self.arg_fields:
            if f.name == name:
                return at
            at += f.arg_words
        raise KeyError(name)

    @property
    def target(self) -> Field:
        """The field a batch's `target` column holds: the id in its route's
        path, else its first id field (a checkout's buyer)."""
        return next(iter(self.path_fields), None) or next(f for f in self.fields if f.is_id)


@dataclass(frozen=True)
class Read:
    """One view an area serves: `GET route` (one id in its path) answers
    `read(engine, id)`, or 404 `missing` where that gives None; the Python
    API reads it as `Festival.view(name, id)`."""

    name: str
    route: str
    summary: str
    read: Callable[[Any, int], dict[str, Any] | None]
    missing: Result
    answer: type  # a msgspec Struct: the body, for the OpenAPI document
    # who may read it besides the operator; `own` roles see a view whose
    # "buyer" (a buyer) or "merchant" (a merchant) is theirs, else a 404
    allowed: Allowed = OPERATOR_ONLY


@dataclass(frozen=True)
class Area:
    """A business area: its commands, the engine tables it owns (by the
    names `Engine.tables()` and a snapshot give them) and its views."""

    name: str
    commands: tuple[Command, ...]
    tables: tuple[str, ...]
    reads: tuple[Read, ...] = ()
