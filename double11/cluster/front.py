"""`double11 cluster front`: the HTTP front of a cluster, as a process.

    double11 cluster front --urls nats://...,nats://... --catalog DIR [--port 1111] [--data DIR | --open]

The same HTTP app as `double11 serve`'s front (http/app.py: routes, tokens
and roles, OpenAPI, metrics, the big screen and its event stream) over the
cluster's units (front_link.ClusterFestival) instead of one engine process.
A command of its own rather than a flag of `serve`: serve's flags open an
engine (its catalog's stock, its log's folder, its clock, its config), none
of which a front has; a front needs the NATS URLs, the catalog (the names on
the big screen) and the token key.  Tokens: the key in --data (DATA/access.key,
made on a first start; `double11 tokens issue --data DATA` signs them), or
--token-key FILE; --open takes none.

Once it listens it prints the JSON line {"event": "serving", "role": "front",
"url": ...} on stdout (what `cluster up` waits for: local_cluster.ProcessSpec).
It holds no state: SIGKILL loses nothing; SIGTERM or Ctrl-C stop it as they
stop `serve` (the requests in flight answered).  Started by a process that
asked for it (lifecycle.child_env), it stops when that process dies.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

from double11 import limits
from double11.catalog.files import load_catalog
from double11.cluster.front_link import ClusterFestival
from double11.http.flow_control import BuyerRates
from double11.http.server import LISTEN_BACKLOG, HttpServer, run_event_loop, token_verifier
from double11.lifecycle import CommandFailed, listen_exclusively


def front_main(urls: list[str], catalog_dir: str, host: str, port: int, data_dir: str,
               token_key: str | None = None, open_access: bool = False) -> int:
    """Serves the cluster at `urls` over HTTP until SIGINT/SIGTERM/SIGHUP.
    A port in use, a catalog or key that cannot be read, a cluster that
    does not answer: CommandFailed, said in one line."""
    listener = listen_exclusively(host, port, LISTEN_BACKLOG)
    try:
        verifier = None if open_access else token_verifier(Path(data_dir), token_key)
        buyer_rates = BuyerRates() if verifier is not None else None
        catalog = load_catalog(catalog_dir)
        return run_event_loop(_front(urls, catalog, host, port, listener, verifier, buyer_rates))
    finally:
        listener.close()


async def _front(urls: list[str], catalog: Any, host: str, port: int, listener: socket.socket, verifier: Any,
                 buyer_rates: BuyerRates | None) -> int:
    try:
        festival = await ClusterFestival.connect(urls, catalog)
    except (OSError, TimeoutError) as exc:
        raise CommandFailed(f"no NATS server answered at {', '.join(urls)} within "
                            f"{limits.stream_connect_s_max:g} s ({type(exc).__name__} {exc})".rstrip(), 1) from None
    except Exception as exc:  # noqa: BLE001 (a cluster not made yet, a unit that never answered: one line)
        raise CommandFailed(f"the cluster at {', '.join(urls)} cannot be served: {type(exc).__name__} {exc}", 1) \
            from None
    server = HttpServer(festival, host=host, port=port, listener=listener, verifier=verifier,
                        buyer_rates=buyer_rates)
    url = f"http://{host}:{port}/"
    print(f"double11 cluster front listening on {url} (units {', '.join(festival.slot_map.units)})",
          file=sys.stderr, flush=True)
    print(json.dumps({"event": "serving", "role": "front", "url": url}), flush=True)
    await server.serve()
    return 0
