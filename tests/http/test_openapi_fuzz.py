"""The served OpenAPI document holds, fuzzed as a new user would: schemathesis
reads /openapi.json from a real `double11 serve` (front and engine processes,
the small catalog) and sends every operation requests that fit the document
and requests that break it.  Its checks: no answer is a 5xx, every status
and body is one the document declares for that operation, and every request
that breaks the document is refused (4xx), not applied.

With and without tokens: against `serve --open` with no token; against a
server that takes tokens, with an operator's token (everything allowed: the
same checks hold), with none, and with what schemathesis makes of the
document's bearer scheme (never a token of the festival's): without a valid
token every operation but the public ones answers 401, as the document
declares (or, for a request that breaks it, 400 for a path naming no id).

A bounded number of examples per operation, derandomized by a fixed seed: the
same requests every run, so a failure here is one CI can replay."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import schemathesis
from conftest import free_port
from hypothesis import HealthCheck, given, settings
from model import T0, small_catalog
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from double11.access.roles import Role
from double11.access.tokens import issue, key_path, load_or_create_key
from double11.catalog.files import save_catalog
from double11.http.openapi import build_openapi

ROOT = Path(__file__).resolve().parents[2]
START_S = 120.0  # a first start after a compiled module changed compiles the kernels
SEED = 2311  # every run sends the same requests
# an event stream's events come every 0.5 s: read it this long
STREAM_READ_S = 1.5
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, negative_data_rejection]


class HeaderSet(NamedTuple):
    """A run: the server it fuzzes, what its requests carry as Authorization,
    and how many examples each operation gets in each of the positive and
    negative modes."""

    tokens: bool  # a server that takes tokens (else `serve --open`)
    # OPERATOR: an operator's token; NONE: no Authorization header; FUZZED: what schemathesis
    # makes of the document's bearer scheme (never a token of the festival's key)
    authorization: str
    examples: int


OPERATOR, NONE, FUZZED = "operator", "none", "fuzzed"
# The open server's run has the most examples: what is found there is the document's.  The runs
# with tokens fewer: they find what tokens change (the module stays within a few minutes)
HEADER_SETS: dict[str, HeaderSet] = {
    "open-server": HeaderSet(tokens=False, authorization=NONE, examples=25),
    "tokens-operator": HeaderSet(tokens=True, authorization=OPERATOR, examples=15),
    "tokens-none": HeaderSet(tokens=True, authorization=NONE, examples=10),
    "tokens-fuzzed": HeaderSet(tokens=True, authorization=FUZZED, examples=10),
}


class Served(NamedTuple):
    url: str
    data_dir: Path


@contextlib.contextmanager
def _serving(root: Path, tokens: bool) -> Iterator[Served]:
    """`double11 serve` over the small catalog (with tokens or --open), in a session of its own."""
    save_catalog(small_catalog(), root / "catalog")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "double11", "serve", "--catalog", str(root / "catalog"), "--data",
             str(root / "data"), "--port", str(port), "--clock-start", str(T0), "--speedup", "0",
             *([] if tokens else ["--open"])],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + START_S
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/openapi.json", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield Served(url, root / "data")
        assert proc.poll() is None, "the server died while fuzzed: " + log_path.read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[bool], Served]]:
    """The server of a run (with tokens or not), started on first use and
    kept for the module's other runs."""
    started: dict[bool, Served] = {}
    with contextlib.ExitStack() as stack:
        def served(tokens: bool) -> Served:
            if tokens not in started:
                started[tokens] = stack.enter_context(_serving(tmp_path_factory.mktemp("fuzz"), tokens))
            return started[tokens]

        yield served


def _can_be_broken(operation: dict) -> bool:
    """Whether a request can break the operation's declaration: it takes a
    body or a bounded parameter (any string fits an unbounded one)."""
    parameters = operation.get("parameters", ())
    return "requestBody" in operation or any(p["schema"].get("type") != "string" for p in parameters)


# every operation of the document as this code builds it (the test then fuzzes the served one), with
# requests that fit it, and requests that break it where a request can
DOCUMENT = build_openapi()
CASES = [(method.upper(), path, mode) for path, methods in DOCUMENT["paths"].items()
         for method, operation in methods.items()
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode == GenerationMode.POSITIVE or _can_be_broken(operation)]


@pytest.fixture(scope="module")
def served_documents(servers: Callable[[bool], Served]) -> Callable[[bool, bool], schemathesis.schemas.BaseSchema]:
    """The document a server serves (a server that takes tokens declares
    them; `serve --open`'s declares none), with or without schemathesis
    making the bearer scheme's Authorization header
    (FUZZED).  Without it, a run sends its own (or none): schemathesis would
    otherwise count a request as breaking the document for its header alone,
    which the operator's token then replaces, and `serve --open` asks for
    none."""
    loaded: dict[tuple[bool, bool], schemathesis.schemas.BaseSchema] = {}

    def document(tokens: bool, fuzzed: bool) -> schemathesis.schemas.BaseSchema:
        if (tokens, fuzzed) not in loaded:
            schema = schemathesis.openapi.from_url(servers(tokens).url + "/openapi.json",
                                                   config=SchemathesisConfig(seed=SEED))
            schema.config.generation.update(deterministic=True, with_security_parameters=fuzzed)
            loaded[(tokens, fuzzed)] = schema
        return loaded[(tokens, fuzzed)]

    return document


def _headers(run: HeaderSet, served: Served) -> dict[str, str]:
    """What a run's requests carry beside the case's own headers."""
    if run.authorization != OPERATOR:
        return {}
    key = load_or_create_key(key_path(served.data_dir))  # made by the server on its first start
    return {"Authorization": f"Bearer {issue(key, Role.operator)}"}


def _refused_unauthenticated(response: Any, mode: GenerationMode) -> bool:
    """401, or, for a request that breaks the document, a path that names no
    id: refused as no route's before anyone is asked for a token (as an
    unknown path is)."""
    if response.status_code == 401:
        return True
    return (mode == GenerationMode.NEGATIVE and response.status_code == 400
            and "in the path" in response.json()["error"]["message"])


@pytest.mark.parametrize("run", list(HEADER_SETS.values()), ids=list(HEADER_SETS))
@pytest.mark.parametrize("method, path, mode", CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES])
def test_the_served_document_holds(served_documents: Callable[[bool, bool], schemathesis.schemas.BaseSchema],
                                   servers: Callable[[bool], Served], method: str, path: str, mode: GenerationMode,
                                   run: HeaderSet) -> None:
    served = servers(run.tokens)
    headers = _headers(run, served)
    operation = served_documents(run.tokens, run.authorization == FUZZED)[path][method]
    # with tokens and none sent (or none of the festival's), an operation the document does not
    # declare public (`security: []`) answers 401 whatever was asked
    unauthenticated = (run.tokens and run.authorization != OPERATOR
                       and DOCUMENT["paths"][path][method.lower()].get("security") != [])
    # an event stream never ends: its events are judged as far as they came
    timeout: dict[str, Any] = {"timeout": STREAM_READ_S} if path == "/v1/stats/stream" else {}

    @given(operation.as_strategy(generation_mode=mode))
    @settings(max_examples=run.examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def holds(case: schemathesis.Case) -> None:
        assert run.authorization == FUZZED or "Authorization" not in (case.headers or {})
        response = case.call_and_validate(base_url=served.url, headers=headers, checks=CHECKS, **timeout)
        if unauthenticated:
            assert _refused_unauthenticated(response, mode), (
                f"{method} {path} without a token of the festival's answered {response.status_code}: "
                f"{response.text[:300]}")

    holds()
