#!/usr/bin/env bash
# make lint: formatting, clippy (with the test hooks, as make test builds), and
# no binary files or registry hives tracked outside tests/fixtures (fixtures are
# made from text by the tests; real hives come from the shared corpus, never
# from the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}
"$cargo" fmt --all --check
"$cargo" clippy --workspace --all-targets --release --features test-hooks -- -D warnings

bad=()
while IFS= read -r -d '' f; do
    [ -f "$f" ] || continue
    case "$f" in tests/fixtures/*) continue ;; esac
    if [ "$(head -c 4 "$f")" = "regf" ]; then
        bad+=("$f (a registry hive)")
    elif [ "$(head -c 8000 "$f" | tr -dc '\000' | wc -c)" -gt 0 ]; then
        bad+=("$f (binary)")
    fi
done < <(git ls-files -z)
if [ "${#bad[@]}" -gt 0 ]; then
    printf 'lint: tracked outside tests/fixtures, remove it (git rm --cached) or make it from text in a test:\n' >&2
    printf '  %s\n' "${bad[@]}" >&2
    exit 1
fi
