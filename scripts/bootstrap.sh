#!/usr/bin/env bash
# Makes .venv with double11 and its dependencies, from nothing but python3.
# Idempotent: does nothing when pyproject.toml has not changed since the last run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.installed-$(sha1sum "$root/pyproject.toml" | cut -c1-12)-${1:-run}"
if [ ! -f "$stamp" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  extras=""
  [ "${1:-run}" = test ] && extras="[test]"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root$extras" >&2
  touch "$stamp"
fi
