"""The served OpenAPI document holds, fuzzed as a new user would: schemathesis
reads /openapi.json from a real `double11 serve` (front and engine processes,
the small catalog) and sends every operation requests that fit the document
and requests that break it.  Its checks: no answer is a 5xx, every status
and body is one the document declares for that operation, and every request
that breaks the document is refused (4xx), not applied.

A bounded number of examples per operation, derandomized by a fixed seed: the
same requests every run, so a failure here is one CI can replay."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

from double11.catalog.files import save_catalog
from double11.http.openapi import build_openapi

ROOT = Path(__file__).resolve().parents[2]
START_S = 120.0  # a first start after a compiled module changed compiles the kernels
SEED = 2311  # every run sends the same requests
EXAMPLES_PER_OPERATION = 25  # for each of the positive and the negative modes
# an event stream's events come every 0.5 s: read it this long
STREAM_READ_S = 1.5
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, negative_data_rejection]
# The headers each run sends.  Issue 23 adds tokens: a set with
# {"Authorization": "Bearer <a role's token>"} per role goes here, each a run of its own.
HEADER_SETS: dict[str, dict[str, str]] = {"no token": {}}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`double11 serve` over the small catalog, in a session of its own; its URL."""
    root = tmp_path_factory.mktemp("fuzz")
    save_catalog(small_catalog(), root / "catalog")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "double11", "serve", "--catalog", str(root / "catalog"), "--data",
             str(root / "data"), "--port", str(port), "--clock-start", str(T0), "--speedup", "0", "--open"],
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
        yield url
        assert proc.poll() is None, "the server died while fuzzed: " + log_path.read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)




def _can_be_broken(operation: dict) -> bool:
    """Whether a request can break the operation's declaration: it takes a
    body or a bounded parameter (any string fits an unbounded one)."""
    parameters = operation.get("parameters", ())
    return "requestBody" in operation or any(p["schema"].get("type") != "string" for p in parameters)


# every operation of the document as this code builds it (the test then fuzzes the served one), with
# requests that fit it, and requests that break it where a request can
CASES = [(method.upper(), path, mode) for path, methods in build_openapi()["paths"].items()
         for method, operation in methods.items()
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode == GenerationMode.POSITIVE or _can_be_broken(operation)]


@pytest.fixture(scope="module")
def served_document(served: str) -> schemathesis.schemas.BaseSchema:
    schema = schemathesis.openapi.from_url(served + "/openapi.json", config=SchemathesisConfig(seed=SEED))
    schema.config.generation.update(max_examples=EXAMPLES_PER_OPERATION, deterministic=True)
    return schema


@pytest.mark.parametrize("headers", list(HEADER_SETS.values()), ids=list(HEADER_SETS))
@pytest.mark.parametrize("method, path, mode", CASES, ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES])
def test_the_served_document_holds(served_document: schemathesis.schemas.BaseSchema, served: str, method: str,
                                   path: str, mode: GenerationMode, headers: dict[str, str]) -> None:
    operation = served_document[path][method]
    # an event stream never ends: its events are judged as far as they came
    timeout: dict[str, Any] = {"timeout": STREAM_READ_S} if path == "/v1/stats/stream" else {}

    @given(operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def holds(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=served, headers=headers, checks=CHECKS, **timeout)

    holds()
