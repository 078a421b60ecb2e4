#!/usr/bin/env bash
# Runs every test. The virt-v2v oracle (tests/drivers_v2v.rs: a libguestfs helper VM
# under TCG for each fixture, about 100 s) runs beside the other test binaries rather
# than after them; its output is printed when it ends. Exits non-zero if any fails.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}
slow=drivers_v2v

# The test hooks (a build that kills itself in a phase, a panic on demand) are
# compiled in only here.
features=(--features test-hooks)
"$cargo" test --release "${features[@]}" --no-run
others=()
for f in tests/*.rs; do
    name=$(basename "$f" .rs)
    [ "$name" = "$slow" ] || others+=(--test "$name")
done

log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$cargo" test --release "${features[@]}" --test "$slow" >"$log" 2>&1 &
slow_pid=$!

status=0
"$cargo" test --release "${features[@]}" --lib --bins "${others[@]}" || status=$?
wait "$slow_pid" || status=$?
echo "--- tests/$slow.rs (ran beside the others) ---"
cat "$log"
exit "$status"
