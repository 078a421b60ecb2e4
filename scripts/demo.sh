#!/usr/bin/env bash
# `make demo`: shows what wingold does today, end to end, on files it makes itself.
set -euo pipefail
bin=$(realpath "$1")
dir=$2
rm -rf "$dir"
mkdir -p "$dir"
dir=$(realpath "$dir")
step() { printf '\n== %s\n' "$*"; }

step "wingold disks --id 10: the system disk (HDA) and the temporary virtio disk (HDB)"
"$bin" disks --id 10 --dir "$dir" --hda-size 20G --hdb-size 1G
qemu-img check -q "$dir/vm_10.qcow2" && echo "qemu-img check: clean"

step "a phony Windows Server 2022 disk, built by the test fixture builder"
phony=$(cargo run --release --quiet --example phony_windows -- "$dir/phony" 2k22)
echo "$phony"

step "wingold inspect: partitions, Windows, hives, and the settings as they are"
"$bin" inspect "$phony"

step "wingold inject --profile all --dry-run: the plan, nothing written"
"$bin" inject "$phony" --profile all --dry-run | tail -n 5

step "wingold inject --profile all: written into an overlay, verified"
"$bin" inject "$phony" --profile all --output "$dir/golden.qcow2" | tail -n 6
qemu-img info --backing-chain "$dir/golden.qcow2" | grep -E '^(image|backing file):'

step "wingold inspect golden.qcow2: every setting now as the profiles want it"
"$bin" inspect "$dir/golden.qcow2" | sed -n '/^settings/,$p'

printf '\nFiles are in %s\n' "$dir"
