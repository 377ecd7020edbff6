#!/usr/bin/env bash
# All of podnet's tests: set-up, type check, unit tests, integration tests in network
# namespaces, real runtimes (containerd CRI, podman). Exit code is non-zero if any fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# npm test: set-up, type check, every suite. `--no-setup SUITE...`: just those suites.
suites=(unit integration runtimes)
if [ "${1:-}" = --no-setup ]; then
  shift
  [ $# -gt 0 ] && suites=("$@")
else
  bash scripts/setup.sh
  npx tsc --noEmit -p .
fi
run() { # suite dir
  mapfile -t files < <(find "test/$1" -name '*.test.ts' | sort)
  [ "${#files[@]}" -eq 0 ] && return 0
  echo "== $1 tests (${#files[@]} files)" >&2
  node --import tsx --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
}
status=0
for suite in "${suites[@]}"; do run "$suite" || status=1; done
# nothing left behind by any suite
left=$(ip netns list | awk '{print $1}' | grep -E '^(pnt|pndemo|pnrt|pnb|pnc|pnlab)' || true)
if [ -n "$left" ]; then echo "namespaces left behind: $left" >&2; status=1; fi
exit $status
