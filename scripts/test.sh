#!/usr/bin/env bash
# Runs the whole test suite from nothing but python3 (and root for apt, for the browser test).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/bootstrap.sh" test
cd "$root"
exec "$root/.venv/bin/python" -m pytest "$@"
