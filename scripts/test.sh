#!/usr/bin/env bash
# Runs every test. Most test binaries wait on other programs (qemu-img, mkntfs,
# ntfs-3g's FUSE driver, QEMU) as much as they compute, so they run two at a
# time (WINGOLD_TEST_JOBS), longest first by the times the last run recorded in
# target/test-times; the virt-v2v oracle (tests/drivers_v2v.rs: a libguestfs
# helper VM under TCG for each fixture, about 3 minutes) runs beside them from the
# start, and so does a 10-second smoke of every fuzz target (scripts/fuzz.sh:
# an instrumented build, then AFL++; FUZZ_SECONDS overrides). Each binary's
# output is printed whole when it ends. Exits non-zero if any fails.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}
slow=drivers_v2v
jobs=${WINGOLD_TEST_JOBS:-2}
times=target/test-times

# The test hooks (a build that kills itself in a phase, a panic on demand) are
# compiled in only here. The binaries' paths come from cargo's own messages.
mapfile -t bins < <(
    "$cargo" test --release --features test-hooks --no-run \
        --message-format=json-render-diagnostics |
        grep '"profile":{[^}]*"test":true' | grep -o '"executable":"[^"]*"' |
        sed 's/^"executable":"//; s/"$//'
)
if [ "${#bins[@]}" -eq 0 ]; then
    echo "test.sh: cargo built no test binary" >&2
    exit 1
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

name_of() { basename "$1" | sed 's/-[0-9a-f]*$//'; }

# One binary, its output and exit code and seconds kept under $logs.
run_one() {
    local bin=$1 id=$2 start end rc=0
    start=$(date +%s%N)
    "$bin" >"$logs/$id.log" 2>&1 || rc=$?
    end=$(date +%s%N)
    echo "$rc" >"$logs/$id.rc"
    echo "$(name_of "$bin") $(((end - start) / 1000000))" >"$logs/$id.ms"
    printf '%-24s %s (%d s)\n' "$(name_of "$bin")" \
        "$([ "$rc" = 0 ] && echo ok || echo FAILED)" $(((end - start) / 1000000000))
}

# Longest first (unknown ones first of all: they may be long).
order=()
while read -r _ i; do order+=("$i"); done < <(
    for i in "${!bins[@]}"; do
        n=$(name_of "${bins[$i]}")
        [ "$n" = "$slow" ] && continue
        ms=$( (awk -v n="$n" '$1 == n { print $2 }' "$times" 2>/dev/null || true) | tail -n 1)
        echo "${ms:-999999999} $i"
    done | sort -rn
)

# The fuzz smoke, beside everything (its build first: it has a target folder
# of its own). A finding fails make test and is kept for the regression test.
fuzz_smoke() {
    local start end rc=0
    start=$(date +%s)
    CARGO="$cargo" FUZZ_SECONDS=${FUZZ_SECONDS:-10} scripts/fuzz.sh >"$logs/fuzz.log" 2>&1 || rc=$?
    end=$(date +%s)
    echo "$rc" >"$logs/fuzz.rc"
    printf '%-24s %s (%d s)\n' "fuzz smoke" "$([ "$rc" = 0 ] && echo ok || echo FAILED)" $((end - start))
}
fuzz_smoke &
fuzz_pid=$!

slow_pid=
for i in "${!bins[@]}"; do
    if [ "$(name_of "${bins[$i]}")" = "$slow" ]; then
        run_one "${bins[$i]}" "$i" &
        slow_pid=$!
    fi
done
running=0
for i in "${order[@]}"; do
    while [ "$running" -ge "$jobs" ]; do
        done_pid=
        wait -n -p done_pid || true
        [ "$done_pid" = "$slow_pid" ] || [ "$done_pid" = "$fuzz_pid" ] || running=$((running - 1))
    done
    run_one "${bins[$i]}" "$i" &
    running=$((running + 1))
done
wait

status=0
failed=()
for i in "${!bins[@]}"; do
    echo "--- $(name_of "${bins[$i]}") ---"
    if [ ! -e "$logs/$i.rc" ]; then
        echo "test.sh: ${bins[$i]} did not run" >&2
        status=1
        failed+=("$(name_of "${bins[$i]}")")
        continue
    fi
    cat "$logs/$i.log"
    if [ "$(cat "$logs/$i.rc")" != 0 ]; then
        status=1
        failed+=("$(name_of "${bins[$i]}")")
    fi
done
echo "--- fuzz smoke ---"
cat "$logs/fuzz.log" 2>/dev/null || true
if [ "$(cat "$logs/fuzz.rc" 2>/dev/null)" != 0 ]; then
    status=1
    failed+=("fuzz-smoke")
fi
cat "$logs"/*.ms >"$times" 2>/dev/null || true
if [ "$status" != 0 ]; then
    echo "test.sh: failed: ${failed[*]}" >&2
fi
exit "$status"
