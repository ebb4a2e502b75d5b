#!/usr/bin/env bash
# Runs the test suite from nothing but python3 (and root for apt, for the browser test).
# With no arguments: lint (ruff), type check (mypy), then every test.
# With arguments, they go to pytest only: ./run test -m unit is the fast subset.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" test
cd "$root"
if [ "$#" -eq 0 ]; then
  "$root/.venv/bin/ruff" check double11 tests
  "$root/.venv/bin/mypy" double11
fi
exec "$root/.venv/bin/python" -m pytest "$@"
