#!/bin/sh
# Installs what the benchmarks use beyond the package itself: wrk (from the Debian/Ubuntu
# archive, when missing) and the `bench` extra (OpenTelemetry, requests, aiohttp).
#   sh benchmarks/setup.sh            # both
#   sh benchmarks/setup.sh --no-pip   # wrk only
# PYTHON picks the interpreter whose environment gets the extra (default: python3).
set -eu

if command -v wrk >/dev/null 2>&1; then
    echo "wrk: $(command -v wrk)"
elif command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    $SUDO apt-get update
    $SUDO apt-get install -y wrk
else
    echo "wrk is not installed and there is no apt-get here; the server rows will use the" \
        "aiohttp load client instead" >&2
fi

if [ "${1:-}" != "--no-pip" ]; then
    cd "$(dirname "$0")/.."
    "${PYTHON:-python3}" -m pip install -e ".[bench]"
fi
