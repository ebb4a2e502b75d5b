"""The registry of business areas: a new area adds its one line to AREAS.

What reads the registry (the OpenAPI document, the refusals' words, the
command table of docs/api.md) sees every area's commands in this order.
"""

from __future__ import annotations

import numpy as np

from double11.engine.commands import CORE
from double11.promotions.area import PROMOTIONS
from double11.quotas.spec import QUOTAS
from double11.spec import Area, Command, Read

AREAS: tuple[Area, ...] = (
    CORE,
    PROMOTIONS,
    QUOTAS,
)

COMMANDS: tuple[Command, ...] = tuple(command for area in AREAS for command in area.commands)
BY_OP: dict[str, Command] = {command.op: command for command in COMMANDS}
BY_NUMBER: dict[int, Command] = {command.number: command for command in COMMANDS}
OP_WANTED = "one of " + ", ".join(BY_OP)
# every area's views, by name; each is also a view number on the link between the processes
READS: tuple[Read, ...] = tuple(read for area in AREAS for read in area.reads)
READ_BY_NAME: dict[str, Read] = {read.name: read for read in READS}
FIRST_READ_NUMBER = 32  # below: the core's views (link.frames.View)
READ_NUMBER: dict[str, int] = {read.name: FIRST_READ_NUMBER + k for k, read in enumerate(READS)}
# by op number: whether the command carries its fields in args (an area's command)
IN_ARGS = np.zeros(max(BY_NUMBER) + 1, dtype=np.bool_)
IN_ARGS[[command.number for command in COMMANDS if command.in_args]] = True
if len(BY_NUMBER) != len(COMMANDS) or 0 in BY_NUMBER:
    raise AssertionError("every command needs a number of its own (spec.Command.number)")
