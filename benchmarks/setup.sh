#!/bin/sh
# Installs what the benchmarks use beyond the package itself: wrk and valgrind (from the
# Debian/Ubuntu archive, when missing) and the `bench` extra (OpenTelemetry, requests, aiohttp).
#   sh benchmarks/setup.sh            # all
#   sh benchmarks/setup.sh --no-pip   # wrk and valgrind only
# PYTHON picks the interpreter whose environment gets the extra (default: python3).
set -eu

MISSING=""
for tool in wrk valgrind; do
    if command -v "$tool" >/dev/null 2>&1; then
        echo "$tool: $(command -v "$tool")"
    else
        MISSING="$MISSING $tool"
    fi
done

if [ -n "$MISSING" ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        if [ "$(id -u)" -ne 0 ]; then
            SUDO="sudo"
        fi
        $SUDO apt-get update
        # shellcheck disable=SC2086
        $SUDO apt-get install -y $MISSING
    else
        echo "not installed, and there is no apt-get here:$MISSING (without wrk the server rows" \
            "use the aiohttp load client; without valgrind benchmarks.instructions cannot run)" >&2
    fi
fi

if [ "${1:-}" != "--no-pip" ]; then
    cd "$(dirname "$0")/.."
    "${PYTHON:-python3}" -m pip install -e ".[bench]"
fi
