#!/usr/bin/env bash
# Install what the test suite needs, if missing:
#   - redis-server and chromium (Debian packages; need root or sudo). Chromium is
#     the browser the dashboard tests drive through Playwright.
#   - a C compiler (gcc): the SQLite store builds its page renderer with it
#     (collector/stores/sqlite_native.py), and the tests check that it does
#   - the FerretDB test server binary (built from deploy/ferretdb with Go)
# Idempotent and quick when everything is already present.
# Progress goes to stderr; the last stdout line is the ferretdb binary path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        echo "install-test-deps.sh: need root (or sudo) to run: $*" >&2
        return 1
    fi
}

if ! command -v redis-server >/dev/null 2>&1; then
    echo "install-test-deps.sh: installing redis-server via apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >&2
    # --no-install-recommends keeps it to the server and its tools.
    as_root apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    # The Debian package may start a system-wide instance on 6379; tests and
    # deploy/dev-services.sh run their own, so leave the system one alone.
fi

if ! command -v chromium >/dev/null 2>&1; then
    echo "install-test-deps.sh: installing chromium via apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >&2
    as_root apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

if ! command -v "${CC:-cc}" >/dev/null 2>&1; then
    echo "install-test-deps.sh: installing gcc via apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >&2
    as_root apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
fi

# wrk drives the API part of make bench (bench/api.py); the tests never need it,
# so a failed install only warns.
if ! command -v wrk >/dev/null 2>&1; then
    echo "install-test-deps.sh: installing wrk via apt-get (make bench)" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y -qq --no-install-recommends wrk >/dev/null \
        || echo "install-test-deps.sh: wrk not installed; make bench part api needs it" >&2
fi

"$here/ferretdb/build.sh"
