"""`double11 cluster up | status | down`: a cluster of units on NATS
JetStream, on this machine, for trials and tests (local_cluster.py);
`cluster front`, the HTTP front on a cluster; `cluster init`, a cluster's
slot map and units' catalogs made once, for a cluster on several machines.

`up` starts the cluster's supervisor in the background (`up --foreground`,
its output in DATA/supervisor.log) and returns once every unit's primary and
standby serve, printing the NATS URLs and how to stop it; `up --foreground`
is the supervisor itself, until Ctrl-C or SIGTERM.  Every process of the
cluster is the supervisor's child and dies with it.  `status` reads the
supervisor's cluster.json and asks the nodes over NATS what they are (the
table, or with --json every process with its role and pid); `down` sends
the supervisor SIGTERM, waits until it has stopped the units and NATS, and
says what it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from double11 import limits
from double11.cli import clock_start, existing_folder, int_in, port_number
from double11.cluster.urls import urls_arg
from double11.lifecycle import CommandFailed, check_ports_free

_STOP_POLL_S = 0.1  # `down`: how often it looks whether the supervisor is gone
DEFAULT_PORT = 1111  # the HTTP front's, as `double11 serve`'s
LOCALHOST = "127.0.0.1"  # where a local cluster's processes listen (local_cluster.LOCALHOST)


def add_commands(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("cluster", help="units on NATS JetStream: up, status, down (on this machine); front; "
                                           "init (a cluster on several machines)")
    commands = group.add_subparsers(dest="cluster_command", required=True)
    data_help = "the cluster's folder (default ./cluster)"
    up = commands.add_parser("up", help="start a local NATS cluster and each unit's primary and standby, in the "
                                        "background; returns once they serve")
    up.add_argument("--data", default="./cluster", help=data_help)
    up.add_argument("--nodes", type=int_in(limits.stream_replicas, limits.local_cluster_nodes_max), default=3,
                    help="NATS nodes (default 3; each unit's stream has 3 replicas)")
    up.add_argument("--units", type=int_in(1, limits.local_cluster_units_max), default=2,
                    help="units, each a primary and a standby engine process (default 2)")
    up.add_argument("--catalog", type=existing_folder,
                    help="catalog folder (CSV or Parquet), its stock split among the units; default: the demo "
                         "catalog, written to DATA/catalog (only a new cluster reads it)")
    up.add_argument("--clock-start", type=clock_start,
                    help="festival clock start of a new cluster: epoch ms or ISO time (default: now)")
    up.add_argument("--nats-port", type=port_number,
                    help="the first of the NATS nodes' ports: client ports, then cluster, then monitoring "
                         "(3 x nodes in a row; default: free ports)")
    up.add_argument("--front-port", type=port_number, default=DEFAULT_PORT,
                    help=f"the HTTP front's port on 127.0.0.1 (default {DEFAULT_PORT}; tokens signed by "
                         "DATA/access.key: double11 tokens issue --data DATA)")
    up.add_argument("--open", action="store_true",
                    help="the front takes no tokens: every route open to whoever reaches the port")
    up.add_argument("--no-rebalancer", action="store_true",
                    help="keep each unit's quotas as first split (no rebalancer: a test's exact figures)")
    up.add_argument("--foreground", action="store_true", help="run the supervisor here, until Ctrl-C or SIGTERM")
    up.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)  # the background `up`'s pipe
    up.set_defaults(run=_up)
    status = commands.add_parser("status", help="the cluster's nodes, units, leaders, positions and lag "
                                                "(exit status 1: no cluster runs there)")
    status.add_argument("--data", default="./cluster", help=data_help)
    status.add_argument("--json", action="store_true", help="as JSON: every process with its role and pid")
    status.set_defaults(run=_status)
    down = commands.add_parser("down", help="stop the cluster: its front, its units, then NATS")
    down.add_argument("--data", default="./cluster", help=data_help)
    down.set_defaults(run=_down)
    front = commands.add_parser("front", help="the cluster's HTTP front: the HTTP API and the big screen over "
                                              "the units (cluster up starts one)")
    front.add_argument("--urls", type=urls_arg, required=True, help="the NATS cluster's client URLs, comma separated")
    front.add_argument("--catalog", type=existing_folder, required=True,
                       help="the festival's catalog folder (the names the big screen shows)")
    front.add_argument("--host", default=LOCALHOST, help=f"address to listen on (default {LOCALHOST})")
    front.add_argument("--port", type=port_number, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    front.add_argument("--data", default="./cluster", help="the folder of the token key, access.key (made there "
                                                             "on a first start; default ./cluster)")
    front.add_argument("--token-key", help="the token key's file (default: DATA/access.key)")
    front.add_argument("--open", action="store_true", help="take no tokens: every route open (a trial only)")
    front.set_defaults(run=_front)

    init = commands.add_parser("init", help="make a cluster on several machines: its slot map in NATS and each "
                                            "unit's catalog (the whole catalog with its share of the stock)")
    init.add_argument("--urls", type=urls_arg, required=True, help="the NATS cluster's client URLs, comma separated")
    init.add_argument("--units", type=int_in(1, limits.cluster_units_max), required=True, help="how many units")
    init.add_argument("--catalog", type=existing_folder, required=True, help="the festival's catalog folder")
    init.add_argument("--out", required=True, help="where each unit's catalog is written: OUT/<unit>/")
    init.set_defaults(run=_init)


# ------------------------------------------------------------------ up
def _up(args: argparse.Namespace) -> int:
    from double11.cluster.local_cluster import check_shape, free_nats_ports, running_supervisor
    from double11.cluster.nats_local import NatsUnavailable, server_binary

    data = Path(args.data)
    pid = running_supervisor(data)
    if pid is not None:
        raise CommandFailed(f"a cluster already runs in {data} (supervisor pid {pid}): "
                            f"double11 cluster status --data {data} says what it does", 1)
    check_shape(data, args.nodes, args.units)
    if args.nats_port is not None:
        free_nats_ports(args.nats_port, args.nodes)  # said now, not from the supervisor after its start
    try:
        check_ports_free(LOCALHOST, [args.front_port])
    except CommandFailed as exc:
        raise CommandFailed(str(exc).replace("--port", "--front-port"), exc.status) from None
    try:
        server_binary()
    except NatsUnavailable as exc:
        raise CommandFailed(str(exc), 1) from None
    if args.foreground:
        return _supervise(args)
    return _start_supervisor(args)


def front_spec(port: int, open_access: bool) -> Any:
    """The cluster's HTTP front as `up` starts it (a local_cluster.ProcessSpec):
    unit u0's catalog for the names, the token key in the cluster's folder."""
    from double11.cluster.local_cluster import ProcessSpec

    argv = [sys.executable, "-m", "double11", "cluster", "front", "--urls", "{urls}", "--port", str(port),
            "--catalog", str(Path("{data}") / "units" / "u0" / "catalog"), "--data", "{data}"]
    return ProcessSpec("front", "front", argv + (["--open"] if open_access else []))


def rebalancer_spec(catalog: str | Path = Path("{data}") / "units" / "u0" / "catalog") -> Any:
    """The quota rebalancer as `up` starts it (a local_cluster.ProcessSpec):
    the SKU ids from `catalog` (by default unit u0's: every unit's holds them all)."""
    from double11.cluster.local_cluster import ProcessSpec

    return ProcessSpec("rebalancer", "rebalancer", [
        sys.executable, "-m", "double11.cluster.rebalancer_node", "--urls", "{urls}", "--catalog", str(catalog)],
        ready_event="rebalancing")


def _supervise(args: argparse.Namespace) -> int:
    """The supervisor: starts the cluster, says so, and keeps it until Ctrl-C or SIGTERM."""
    from double11.cluster.local_cluster import LocalCluster

    cluster = LocalCluster(extra=[front_spec(args.front_port, args.open)] +
                           ([] if args.no_rebalancer else [rebalancer_spec()]))
    try:
        cluster.start(args.data, args.nodes, args.units, args.catalog, args.clock_start, args.nats_port)
        started = _started(Path(args.data), cluster.urls, cluster.units, args.front_port)
        if args.ready_fd is not None:
            print(started, flush=True)
            os.write(args.ready_fd, started.encode())
            os.close(args.ready_fd)
        else:
            print(f"{started}\nCtrl-C stops it", flush=True)
        while True:
            for line in cluster.exited():
                print(line, flush=True)
            cluster.wait(limits.cluster_status_wait_s)
    except KeyboardInterrupt:
        stopped = cluster.stop()
        print(f"stopped {', '.join(stopped) if stopped else 'nothing'}", flush=True)
        return 0


def _started(data: Path, urls: list[str], units: list[str], front_port: int) -> str:
    return "\n".join([
        f"cluster up in {data}: {len(urls)} NATS nodes, {len(units)} units ({', '.join(units)}), "
        f"each a primary and a standby (supervisor pid {os.getpid()})",
        f"NATS: {','.join(urls)}",
        f"HTTP: http://{LOCALHOST}:{front_port}/ (the API and the big screen)",
        f"status: double11 cluster status --data {data}",
        f"stop:   double11 cluster down --data {data}",
    ])


def _start_supervisor(args: argparse.Namespace) -> int:
    """Starts `up --foreground` in a session of its own (it outlives this
    command) and waits until it says the cluster serves, or ends."""
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "double11", "cluster", "up", "--foreground", "--data", str(data),
            "--nodes", str(args.nodes), "--units", str(args.units), "--front-port", str(args.front_port)]
    if args.open:
        argv.append("--open")
    if args.no_rebalancer:
        argv.append("--no-rebalancer")
    for option, value in (("--catalog", args.catalog), ("--clock-start", args.clock_start),
                          ("--nats-port", args.nats_port)):
        if value is not None:
            argv += [option, str(value)]
    log = data / "supervisor.log"
    ready, ready_fd = os.pipe()
    with open(log, "a") as output:
        supervisor = subprocess.Popen([*argv, "--ready-fd", str(ready_fd)], stdin=subprocess.DEVNULL, stdout=output,
                                      stderr=subprocess.STDOUT, pass_fds=(ready_fd,), start_new_session=True)
    os.close(ready_fd)
    try:
        with os.fdopen(ready) as said:
            started = said.read()  # the end comes when the supervisor serves, or dies
    except KeyboardInterrupt:
        supervisor.terminate()
        supervisor.wait()
        raise
    if started:
        print(f"{started}\nits output: {log}")
        return 0
    status = supervisor.wait()
    raise CommandFailed(_last_complaint(log), status or 1)


def _last_complaint(log: Path) -> str:
    """The supervisor's last line, without its `double11 cluster up: ` (this command says it too)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    last = lines[-1] if lines else f"the supervisor ended without a word (see {log})"
    return last.removeprefix("double11 cluster up: ")


# ------------------------------------------------------------------ front
def _front(args: argparse.Namespace) -> int:
    from double11.cluster.front import front_main

    return front_main(args.urls, args.catalog, args.host, args.port, args.data, args.token_key, args.open)


def _init(args: argparse.Namespace) -> int:
    """The slot map written once (a second init of another shape is refused:
    the units' ids and buyers follow the first), then the units' catalogs."""
    from double11.catalog.files import load_catalog, save_catalog
    from double11.cluster.buckets import BucketUnavailable
    from double11.cluster.local_cluster import unit_names
    from double11.cluster.quotas import unit_catalogs
    from double11.cluster.slots import SlotMap, save_slot_map

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise CommandFailed(f"{out} is not empty: give an empty or new folder for the units' catalogs", 2)
    names = unit_names(args.units)
    catalog = load_catalog(args.catalog)
    try:
        save_slot_map(args.urls, SlotMap.even(names))
    except (ValueError, BucketUnavailable, OSError, TimeoutError) as exc:
        raise CommandFailed(f"the slot map could not be written at {', '.join(args.urls)}: {exc}", 1) from None
    for name, share in zip(names, unit_catalogs(catalog, args.units)):
        save_catalog(share, out / name)
    print(f"units {', '.join(names)}: slot map written; their catalogs in {out}{os.sep}<unit>. Start each unit's "
          f"primary with --catalog {out}{os.sep}<unit> (docs/cluster.md, \"On several machines\")")
    return 0


# ------------------------------------------------------------------ status
def _alive(pid: int | None) -> bool:
    """Whether the process runs (not gone, not a zombie)."""
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _running_cluster(data: Path) -> tuple[int, dict[str, Any]]:
    from double11.cluster.local_cluster import read_cluster_file, running_supervisor

    found = read_cluster_file(data)
    pid = running_supervisor(data)
    if found is None or pid is None:
        raise CommandFailed(f"no cluster runs in {data}: double11 cluster up --data {data} starts one", 1)
    return pid, found


def _ask_nodes(found: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], str | None]:
    """What the unit nodes say of themselves, and each unit's stream (None: no
    answer); and why NATS did not answer, if it did not."""
    import nats.errors
    from nats.aio.client import Client

    from double11.cluster.stream_log import ask_cluster, stream_name
    from double11.cluster.unit_requests import ask_status

    expected = sum(1 for proc in found.get("processes", []) if proc.get("unit") and _alive(proc.get("pid")))

    async def question(nc: Client) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        answers = await ask_status(nc, expected=expected)
        js = nc.jetstream(timeout=limits.cluster_status_wait_s)
        streams: dict[str, Any] = {}
        for unit in found.get("units", []):
            streams[unit] = None
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                info = await js.stream_info(stream_name(unit))
                leader = info.cluster.leader if info.cluster is not None else None
                streams[unit] = {"leader": leader, "last_seq": info.state.last_seq}
        return answers, streams

    try:
        answers, streams = ask_cluster(found.get("urls", []), "double11-cluster-status", question,
                                       timeout_s=limits.stream_connect_s_max)
    except Exception as exc:  # noqa: BLE001 (said in the status: the processes are listed anyway)
        return [], {}, f"{type(exc).__name__} {exc}".rstrip()
    return answers, streams, None


def _report(data: Path, supervisor: int, found: dict[str, Any]) -> dict[str, Any]:
    answers, streams, unanswered = _ask_nodes(found)
    by_pid = {answer.get("pid"): answer for answer in answers}
    processes: list[dict[str, Any]] = [{"name": "supervisor", "role": "supervisor", "pid": supervisor,
                                        "alive": _alive(supervisor)}]
    for node in found.get("nats", []):
        processes.append({"name": node["name"], "role": "nats", "pid": node.get("pid"),
                          "alive": _alive(node.get("pid")), "url": f"nats://127.0.0.1:{node['client_port']}"})
    for proc in found.get("processes", []):
        answer = by_pid.get(proc.get("pid"))
        entry = {"name": proc["name"], "role": answer["role"] if answer else proc["role"], "unit": proc.get("unit"),
                 "pid": proc.get("pid"), "alive": _alive(proc.get("pid")), "answered": answer is not None,
                 "started_as": proc["role"], "log": proc.get("log"), "url": proc.get("url")}
        if answer:
            entry.update(seq=answer.get("seq"), lag=answer.get("lag"))
        processes.append(entry)
    units = []
    for unit in found.get("units", []):
        mine = [p for p in processes if p.get("unit") == unit]
        units.append({"unit": unit, "stream": streams.get(unit),
                      "primary": [p["pid"] for p in mine if p["role"] == "primary" and p["alive"]],
                      "standby": [p["pid"] for p in mine if p["role"] == "standby" and p["alive"]]})
    return {"data": str(data), "state": found.get("state"), "urls": found.get("urls", []),
            "nats_unanswered": unanswered, "units": units, "processes": processes}


def _status(args: argparse.Namespace) -> int:
    data = Path(args.data)
    supervisor, found = _running_cluster(data)
    report = _report(data, supervisor, found)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"cluster in {data}: {found.get('state')} (supervisor pid {supervisor})")
    if report["nats_unanswered"]:
        print(f"NATS did not answer: {report['nats_unanswered']}")
    leaders: dict[str, list[str]] = {}
    for unit in report["units"]:
        if unit["stream"]:
            leaders.setdefault(unit["stream"]["leader"], []).append(unit["unit"])
    print(f"{'NATS':<6} {'PID':>8}  {'STATE':<5}  {'URL':<24}  LEADS THE STREAMS OF")
    for proc in report["processes"]:
        if proc["role"] == "nats":
            print(f"{proc['name']:<6} {proc['pid'] or '-':>8}  {'up' if proc['alive'] else 'down':<5}  "
                  f"{proc['url']:<24}  {', '.join(leaders.get(proc['name'], [])) or '-'}")
    others = [proc for proc in report["processes"] if proc.get("started_as") and not proc.get("unit")]
    if others:
        print(f"{'PROCESS':<12} {'PID':>8}  {'STATE':<5}  SAYS")
        for proc in others:
            print(f"{proc['name']:<12} {proc['pid'] or '-':>8}  {'up' if proc['alive'] else 'down':<5}  "
                  f"{proc.get('url') or proc.get('log') or '-'}")
    print(f"{'UNIT':<6} {'RECORDS':>8}  {'PROCESS':<12} {'PID':>8}  {'ROLE':<13} LAG")
    for proc in report["processes"]:
        if proc.get("unit"):
            stream = next(u["stream"] for u in report["units"] if u["unit"] == proc["unit"])
            records = stream["last_seq"] if stream else "?"
            role = proc["role"] if proc["alive"] else "gone"
            lag = proc.get("lag")
            print(f"{proc['unit']:<6} {records:>8}  {proc['name']:<12} {proc['pid'] or '-':>8}  {role:<13} "
                  f"{'-' if lag is None else lag}")
    return 0


# ------------------------------------------------------------------ down
def _down(args: argparse.Namespace) -> int:
    from double11.cluster.local_cluster import read_cluster_file, running_supervisor

    data = Path(args.data)
    supervisor, before = _running_cluster(data)
    os.kill(supervisor, signal.SIGTERM)
    deadline = time.monotonic() + limits.cluster_stop_s_max
    killed = False
    while running_supervisor(data) is not None or _alive(supervisor):  # it lets go of its lock just before it ends
        if time.monotonic() > deadline and not killed:  # its children die with it
            with contextlib.suppress(ProcessLookupError):
                os.kill(supervisor, signal.SIGKILL)
            killed = True
        time.sleep(_STOP_POLL_S)
    after = read_cluster_file(data) or before  # the processes started since `before` was read included
    units = [proc for proc in after.get("processes", []) if proc.get("pid")]
    processes = [(proc["name"], proc["pid"]) for proc in units if proc.get("stopped") or killed]
    processes += [(f"NATS {node['name']}", node["pid"]) for node in before.get("nats", []) if node.get("pid")]
    how = f"killed after {limits.cluster_stop_s_max:g} s" if killed else "stopped"
    print(f"{how} the cluster in {data}: its supervisor (pid {supervisor}), "
          f"{', '.join(f'{name} (pid {pid})' for name, pid in processes)}")
    ended = [f"{p['name']} (pid {p['pid']}, exit status {p.get('exit_status')})" for p in units
             if not p.get("stopped") and not killed]
    if ended:
        print(f"ended before, on their own: {', '.join(ended)} (their logs say why)")
    left = [f"{name} (pid {pid})" for name, pid in processes if _alive(pid)]
    if left:
        raise CommandFailed(f"still running: {', '.join(left)}", 1)
    return 0
