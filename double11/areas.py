"""The registry of business areas: a new area adds its one line to AREAS.

What reads the registry (the OpenAPI document, the refusals' words, the
command table of docs/api.md) sees every area's commands in this order.
"""

from __future__ import annotations

from double11.engine.commands import CORE
from double11.spec import Area, Command

AREAS: tuple[Area, ...] = (
    CORE,
)

COMMANDS: tuple[Command, ...] = tuple(command for area in AREAS for command in area.commands)
BY_OP: dict[str, Command] = {command.op: command for command in COMMANDS}
OP_WANTED = "one of " + ", ".join(BY_OP)
