#!/usr/bin/env bash
# Runs every go fuzz target in the module (or in the packages given) for a
# given time each, one at a time, and stops at the first failure.
#
#   scripts/fuzz.sh 60s                 # every target, 60 s each
#   scripts/fuzz.sh 10m ./circuit       # circuit's targets, 10 minutes each
#   KEEP_CORPUS=1 scripts/fuzz.sh 10m   # also copy the generated corpus into
#                                       # each package's testdata/fuzz
#   FUZZ_LOG=file scripts/fuzz.sh 10m   # append one line per target:
#                                       # date package target duration execs result
#                                       # (pass, FAIL, or pass-deadline-race: see below)
#   FUZZ_ONLY='^Fuzz(DecodeCell|Serve)$' scripts/fuzz.sh 10m   # only these targets
#
# New interesting inputs stay in Go's cache ($(go env GOCACHE)/fuzz) unless
# KEEP_CORPUS=1; failing inputs are always written to the package's
# testdata/fuzz and become regression seeds that `go test` runs.
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:?usage: scripts/fuzz.sh DURATION [PACKAGE...]}
shift
pkgs=("$@")
[ ${#pkgs[@]} -eq 0 ] && mapfile -t pkgs < <(go list ./...)
cache=$(go env GOCACHE)/fuzz
for pkg in "${pkgs[@]}"; do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	path=$(go list -f '{{.ImportPath}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		if [ -n "${FUZZ_ONLY:-}" ] && ! [[ "$target" =~ $FUZZ_ONLY ]]; then continue; fi
		echo "== $pkg $target ($time)"
		out=$(mktemp)
		status=pass
		seeds=$(ls "$dir/testdata/fuzz/$target" 2>/dev/null | sort)
		# -timeout 0: go test's default 10m would end a 10m run.
		go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$time" -timeout 0 -parallel 1 2>&1 | tee "$out" || status=FAIL
		execs=$(grep -o 'execs: [0-9]*' "$out" | tail -1 | cut -d' ' -f2)
		# Go 1.26's coordinator can report "context deadline exceeded" at
		# the end of -fuzztime with no failing input (golang/go#75804,
		# fixed in 1.27): a failure writes its input to testdata/fuzz.
		if [ "$status" = FAIL ] && grep -q 'context deadline exceeded' "$out" &&
			[ "$(ls "$dir/testdata/fuzz/$target" 2>/dev/null | sort)" = "$seeds" ]; then
			status=pass-deadline-race
		fi
		rm -f "$out"
		if [ -n "${FUZZ_LOG:-}" ]; then
			printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$path" "$target" "$time" "${execs:-0}" "$status" >> "$FUZZ_LOG"
		fi
		if [ "${KEEP_CORPUS:-0}" = 1 ] && [ -d "$cache/$path/$target" ]; then
			mkdir -p "$dir/testdata/fuzz/$target"
			cp -n "$cache/$path/$target"/* "$dir/testdata/fuzz/$target/" 2>/dev/null || true
		fi
		if [ "$status" = FAIL ]; then exit 1; fi
	done
done
