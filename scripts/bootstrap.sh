#!/usr/bin/env bash
# Prepare a fresh machine for raytrade. Idempotent.
#   scripts/bootstrap.sh python    virtualenv .venv with the project and its pinned dependencies
#   scripts/bootstrap.sh services  PostgreSQL and Redis server binaries the tests start, and Debian's
#                                  chromium + chromium-driver for the dashboard's browser test (apt-get if missing)
set -euo pipefail
cd "$(dirname "$0")/.."

python_env() {
  local py
  py=$(command -v python3.11 || true)
  if [ -z "$py" ]; then
    py=$(command -v python3 || true)
    [ -n "$py" ] && "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
      echo "bootstrap: Python 3.11 is required (python3.11 not found)" >&2; exit 1; }
  fi
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip wheel
  # constraints.txt pins every package to the versions CI tested; pyproject.toml bounds them.
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
}

services() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    missing+=(postgresql)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: the tests need ${missing[*]}: install them with apt-get" >&2
    exit 1
  fi
  # Debian's postgresql package starts a cluster of its own; the tests start private servers instead.
  if [[ " ${missing[*]} " == *" postgresql "* ]] && command -v service >/dev/null 2>&1; then
    service postgresql stop >/dev/null 2>&1 || true
  fi
}

case "${1:-}" in
  python) python_env ;;
  services) services ;;
  *) echo "usage: $0 python|services" >&2; exit 2 ;;
esac
