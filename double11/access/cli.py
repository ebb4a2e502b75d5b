"""`double11 tokens issue` and `double11 tokens rotate`: the festival's tokens
from its key, without a running server (the key is a file in the data folder)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from double11.access import tokens
from double11.access.roles import ROLE_NAMES, WITH_ID, a_token_of
from double11.lifecycle import CommandFailed


def add_commands(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("tokens", help="issue tokens for buyers, merchants, gateways and operators; rotate the key")
    commands = group.add_subparsers(dest="tokens_command", required=True)
    issue = commands.add_parser("issue", help="print a token (alone on the last line)")
    issue.add_argument("--data", default="./data", help="the festival's data folder, which holds its key "
                                                        "(default ./data, as for serve)")
    issue.add_argument("--token-key", help="the key's file, where serve was given one")
    issue.add_argument("--role", required=True, choices=list(ROLE_NAMES))
    issue.add_argument("--id", type=int, default=0, help="the buyer's or merchant's id (buyer and merchant tokens)")
    issue.add_argument("--ttl", default="1h", help="how long it is valid: 90, 45s, 30m, 1h, 7d (default 1h)")
    issue.set_defaults(run=_issue)
    rotate = commands.add_parser("rotate", help="make a new key; tokens of the old one stay valid until they "
                                                "expire (restart the server to take it)")
    rotate.add_argument("--data", default="./data")
    rotate.add_argument("--token-key")
    rotate.set_defaults(run=_rotate)


def _key_file(args: argparse.Namespace, create: bool) -> Path:
    path = tokens.key_path(args.data, args.token_key)
    if not create and not path.exists():
        raise CommandFailed(f"no token key at {path}: start the server on {args.data} once, or pass --token-key")
    return path


def _issue(args: argparse.Namespace) -> int:
    role = ROLE_NAMES[args.role]
    if role in WITH_ID and args.id <= 0:
        raise CommandFailed(f"{a_token_of(role)} needs --id (a positive id)")
    if role not in WITH_ID and args.id:
        raise CommandFailed(f"{a_token_of(role)} acts for everyone: leave out --id")
    try:
        ttl_s = tokens.parse_ttl_s(args.ttl)
        key = tokens.load_or_create_key(_key_file(args, create=True))
        token = tokens.issue(key, role, args.id, ttl_s)
    except ValueError as e:
        raise CommandFailed(str(e)) from None
    who = f" {args.id}" if role in WITH_ID else ""
    print(f"# a {role.name}{who} token, valid for {args.ttl}: send it as 'Authorization: Bearer <token>'",
          file=sys.stderr)
    print(token)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    path = _key_file(args, create=False)
    try:
        old, new = tokens.rotate(path)
    except ValueError as e:
        raise CommandFailed(str(e)) from None
    print(f"key {old} is now the previous key ({path.name}.previous); the new key is {new}. Restart the server to "
          f"take it: tokens of both keys are valid until they expire; delete the previous key to refuse its tokens.")
    return 0
