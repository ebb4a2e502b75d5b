"""The command table of docs/api.md, rendered from the commands' declarations.

`python -m double11.commands_doc` prints the section; tests/test_spec.py
checks that docs/api.md holds it as rendered, so the page cannot drift from
the declarations.
"""

from __future__ import annotations

import msgspec

from double11 import areas, limits
from double11.spec import IDEMPOTENCY_KEY, Command, Field
from double11.statuses import HTTP_STATUS

BEGIN = "<!-- the commands' table, rendered from their declarations: python -m double11.commands_doc -->"
END = "<!-- end of the rendered table -->"


def bound(field: Field) -> str:
    """A field's bound, short enough for a table cell."""
    if field.kind == "integer" and field.high == limits.id_max:
        return f"{field.low}..2^63-1"
    if field.kind == "list" and len(field.items) == 1:  # its items bare: [10, 20]
        item = field.items[0]
        return f"{field.low}..{field.high} of {item.name} ({bound(item)})"
    if field.kind == "list":
        items = ", ".join(f"{item.name} ({bound(item)})" for item in field.items)
        return f"{field.low}..{field.high} of {{{items}}}"
    return field.wanted


def _notes(field: Field) -> str:
    """Where the field goes and whether it may be left out, for its cell."""
    if field.where == "path":
        return "; in the path"
    if field.optional and field.kind == "list":
        return "; optional, default empty"
    if field.optional and not field.low <= field.default <= field.high:  # left out: none (a platform coupon's merchant)
        return "; optional"
    if field.optional:
        return f"; optional, default {field.default}"
    return ""


def _shape(t: msgspec.inspect.Type) -> str:
    if isinstance(t, msgspec.inspect.StructType):
        return "{" + ", ".join(_member(f.encode_name, f.type) for f in t.fields) + "}"
    if isinstance(t, msgspec.inspect.ListType) and _shape(t.item_type):
        return f"[{_shape(t.item_type)}]"
    return ""


def _member(name: str, t: msgspec.inspect.Type) -> str:
    if isinstance(t, msgspec.inspect.LiteralType) and len(t.values) == 1:
        return f'{name}: "{t.values[0]}"'
    if isinstance(t, msgspec.inspect.UnionType):  # `x | None`: shown as x, or absent/null where it does not apply
        t = next(member for member in t.types if not isinstance(member, msgspec.inspect.NoneType))
    inner = _shape(t)
    return f"{name}: {inner}" if inner else name


def answer(command: Command) -> str:
    """The body on success, as `{checkout, status: "paid", ...}`."""
    return _shape(msgspec.inspect.type_info(command.answer))


def _fields(command: Command) -> str:
    return ", ".join(f"{f.name} ({bound(f)}{_notes(f)})" for f in command.fields if f is not IDEMPOTENCY_KEY)


def _refusals(command: Command) -> str:
    """The codes a well-shaped command may still be refused with, in the order they are checked."""
    return ", ".join(f"`{code.name}`" for code in command.results)


def section() -> str:
    """The lines between BEGIN and END, both included."""
    rows = [f"| {c.op} | POST {c.route} | {_fields(c)} | {HTTP_STATUS[c.success]} | {answer(c)} | {_refusals(c)} |"
            for c in areas.COMMANDS]
    return "\n".join([
        BEGIN,
        f"Every command is a JSON object with `op`, `idempotency_key` ({IDEMPOTENCY_KEY.wanted}) and its "
        "fields. A single request's route gives the op and the ids marked \"in the path\"; in a batch "
        "they are fields of the command. A field out of its bounds is refused (400) with its field's code "
        "(`invalid_template`, `invalid_threshold` and `invalid_deal` for a promotion's, else mostly "
        "`invalid_request`), not remembered; a refusal of state is remembered for retries.",
        "",
        "| op | single request | fields | success | body on success | refusals of state |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        END,
    ])


if __name__ == "__main__":
    print(section())
