#!/usr/bin/env bash
# Runs every go fuzz target in the module (or in the packages given) for a
# given time each, one at a time, and stops at the first failure.
#
#   scripts/fuzz.sh 60s                 # every target, 60 s each
#   scripts/fuzz.sh 10m ./circuit       # circuit's targets, 10 minutes each
#
# New interesting inputs stay in Go's cache ($(go env GOCACHE)/fuzz);
# failing inputs are written to the package's testdata/fuzz and become
# regression seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:?usage: scripts/fuzz.sh DURATION [PACKAGE...]}
shift
pkgs=("$@")
[ ${#pkgs[@]} -eq 0 ] && mapfile -t pkgs < <(go list ./...)
for pkg in "${pkgs[@]}"; do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "== $pkg $target ($time)"
		go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$time" -parallel 1
	done
done
