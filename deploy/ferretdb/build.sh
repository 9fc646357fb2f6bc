#!/usr/bin/env bash
# Build the FerretDB v1 (SQLite backend) test server from deploy/ferretdb/.
#
# Output: ${DELTAWIRE_CACHE:-$HOME/.cache/deltawire}/bin/ferretdb-v1.24.2
# Skips the build when that binary exists and is newer than main.go, go.mod
# and go.sum. The binary's path is the last line on stdout; everything else
# goes to stderr. Needs only `go` and the Go module proxy.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${DELTAWIRE_CACHE:-$HOME/.cache/deltawire}"
out="$cache/bin/ferretdb-v1.24.2"

up_to_date() {
    [[ -x "$out" ]] || return 1
    local src
    for src in main.go go.mod go.sum; do
        [[ "$out" -nt "$here/$src" ]] || return 1
    done
}

if ! up_to_date; then
    # The usual install location, for shells whose PATH lacks it (CI, sudo).
    if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
        export PATH="/usr/local/go/bin:$PATH"
    fi
    if ! command -v go >/dev/null 2>&1; then
        echo "build.sh: 'go' not found on PATH (Go >= 1.24 needed)" >&2
        exit 1
    fi
    mkdir -p "$cache/bin"
    # Serialise concurrent builds (e.g. parallel test workers).
    exec 9>"$cache/bin/.ferretdb-build.lock"
    flock 9
    if ! up_to_date; then
        echo "build.sh: building $out (first build downloads modules and takes a few minutes)" >&2
        tmp="$out.tmp.$$"
        trap 'rm -f "$tmp"' EXIT
        (
            cd "$here"
            GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -buildvcs=false \
                -tags ferretdb_no_postgresql -ldflags "-s -w" -o "$tmp" . >&2
        )
        mv -f "$tmp" "$out"
        trap - EXIT
    fi
    flock -u 9
fi

echo "$out"
