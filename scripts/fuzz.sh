#!/usr/bin/env bash
# make fuzz: wingold's parsers under AFL++ (Debian's afl++), on the stable
# toolchain: rustc's own SanitizerCoverage pass (trace-pc-guard, the edges AFL++
# counts) and AFL++'s runtime object linked in, no other toolchain. Each target
# of fuzz/targets.rs runs for FUZZ_SECONDS (default 60), two at a time, from
# seeds made here: qcow2 and raw disks by qemu-img, sfdisk and sgdisk; ISOs by
# genisoimage (one UDF with a WIM by wimcapture); the INF and PE files of the
# test fixture's virtio-win ISO and Debian's rhsrvany; the .reg files of
# regfiles/ and tests/fixtures; the hives of the shared corpus ($WINGOLD_CORPUS,
# odd/ and logs/ included). A crash or hang is copied to
# tests/fixtures/fuzz/TARGET/ (tests/fuzz_regressions.rs replays them all) and
# fails the run. FUZZ_TARGETS picks some targets (space-separated).
set -euo pipefail
trap 'echo "fuzz.sh: failed at line $LINENO" >&2' ERR
cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}
seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-2}
work=${FUZZ_DIR:-target/fuzz}
corpus=${WINGOLD_CORPUS:-../shared/corpus}
rt=/usr/lib/afl/afl-compiler-rt.o

for tool in afl-fuzz qemu-img sfdisk sgdisk genisoimage wimcapture xorriso xz; do
    command -v "$tool" >/dev/null || {
        echo "fuzz.sh: $tool is missing; run make setup" >&2
        exit 1
    }
done
# The seeds' hives, and the fixture builder's, come from the shared corpus.
[ -f "$corpus/SYSTEM.xz" ] || {
    echo "fuzz.sh: the hive corpus is missing ($corpus/SYSTEM.xz); set WINGOLD_CORPUS to the folder holding it" >&2
    exit 1
}
[ -f "$rt" ] || {
    echo "fuzz.sh: $rt is missing; install Debian's afl++ (make setup)" >&2
    exit 1
}

# 1. The instrumented build, in a target folder of its own (the flags differ).
flags="--cfg afl -C passes=sancov-module"
for a in level=3 trace-pc-guard prune-blocks=0 trace-compares; do
    flags+=" -C llvm-args=-sanitizer-coverage-$a"
done
flags+=" -C debug-assertions -C overflow-checks -C link-arg=$rt"
RUSTFLAGS="$flags" "$cargo" build --release --quiet -p wingold-fuzz --target-dir "$work/build"
bin=$work/build/release/wingold-fuzz
mapfile -t all < <("$bin" 2>&1 | sed -n 's/^  //p')
targets=("${all[@]}")
[ -n "${FUZZ_TARGETS:-}" ] && read -r -a targets <<<"$FUZZ_TARGETS"

# 2. Seeds (made once per checkout of this script; AFL++ skips files over 1 MiB).
seeds=$work/seeds
if [ ! -f "$seeds/.made" ] || [ "$seeds/.made" -ot "$0" ]; then
    rm -rf "$seeds"
    tmp=$work/seed-work
    rm -rf "$tmp"
    mkdir -p "$tmp" "$seeds"
    for t in "${all[@]}"; do mkdir -p "$seeds/$t"; done
    # Disks: MBR with a logical partition, GPT; raw and as qcow2 (plain,
    # compressed, version 2, an overlay, extended L2 entries).
    truncate -s 1M "$tmp/mbr.raw" "$tmp/gpt.raw"
    printf 'label: dos\nstart=64, size=512, type=7, bootable\nstart=600, type=5\nstart=640, size=256, type=83\n' |
        sfdisk -q "$tmp/mbr.raw"
    printf 'NTFS    ' | dd of="$tmp/mbr.raw" bs=1 seek=$((64 * 512 + 3)) conv=notrunc status=none
    sgdisk -q -n 1:40:+256K -t 1:EF00 -n 2:0:+256K -t 2:0700 "$tmp/gpt.raw" >/dev/null
    cp "$tmp/mbr.raw" "$tmp/gpt.raw" "$seeds/partitions/"
    for d in mbr gpt; do
        qemu-img convert -O qcow2 -o cluster_size=4096 "$tmp/$d.raw" "$seeds/qcow2/$d.qcow2"
    done
    qemu-img convert -c -O qcow2 -o cluster_size=4096 "$tmp/mbr.raw" "$seeds/qcow2/compressed.qcow2"
    qemu-img convert -O qcow2 -o compat=0.10,cluster_size=4096 "$tmp/gpt.raw" "$seeds/qcow2/v2.qcow2"
    qemu-img convert -O qcow2 -o extended_l2=on,cluster_size=16384 "$tmp/mbr.raw" "$seeds/qcow2/l2ext.qcow2"
    qemu-img create -q -f qcow2 -o cluster_size=4096 -b mbr.qcow2 -F qcow2 "$seeds/qcow2/overlay.qcow2"
    qemu-img create -q -f qcow2 -o cluster_size=4096 "$seeds/qcow2/empty.qcow2" 1M
    # The test fixture's virtio-win ISO: its INF, PE files, and a small disc
    # of one driver folder (Rock Ridge and Joliet; and plain ISO 9660).
    # (With the features make test builds: there, it is built already.)
    "$cargo" build --release --quiet --features test-hooks --example phony_windows
    target/release/examples/phony_windows "$tmp/phony" 2k22 0.1.999 >/dev/null
    xorriso -osirrox on -indev "$tmp/phony/virtio-win-0.1.999.iso" -extract / "$tmp/iso" >/dev/null 2>&1
    pick() { # first N distinct files (by content) matching a find -name
        find "$tmp/iso" -type f -name "$1" -print0 | xargs -0 sha256sum | sort -u -k1,1 |
            awk -v n="$2" 'NR <= n' | while read -r sum f; do cp "$f" "$3/${sum:0:12}-$(basename "$f")"; done
    }
    pick '*.inf' 24 "$seeds/inf"
    pick '*.sys' 6 "$seeds/pe"
    pick '*.dll' 2 "$seeds/pe"
    cp /usr/share/virt-tools/rhsrvany.exe "$seeds/pe/" 2>/dev/null || true
    mkdir -p "$tmp/disc"
    cp -r "$tmp/iso/viostor" "$tmp/disc/"
    find "$tmp/disc" -type f -size +64k -delete
    genisoimage -quiet -R -J -V virtio-win-0.1.999 -o "$seeds/iso9660/rr.iso" "$tmp/disc"
    genisoimage -quiet -V virtio-win-0.1.999 -o "$seeds/iso9660/plain.iso" "$tmp/disc"
    # An installer-like disc: install.wim in UDF, hidden from ISO 9660.
    mkdir -p "$tmp/wimtree/Windows/System32" "$tmp/inst/sources"
    echo wingold >"$tmp/wimtree/Windows/System32/note.txt"
    wimcapture "$tmp/wimtree" "$tmp/inst/sources/install.wim" "Windows Server 2022 SERVERSTANDARD" >/dev/null
    wiminfo --xml "$tmp/inst/sources/install.wim" >"$seeds/wim_xml/install.xml"
    genisoimage -quiet -udf -hide install.wim -V CCCOMA_X64FRE -o "$seeds/installer/udf.iso" "$tmp/inst"
    genisoimage -quiet -R -V CCCOMA_X64FRE -o "$seeds/installer/iso9660.iso" "$tmp/inst"
    # .reg files.
    for f in regfiles/*.reg tests/fixtures/reg/*.reg tests/fixtures/*.reg; do
        [ "$(stat -c %s "$f")" -le 1048576 ] && cp "$f" "$seeds/reg/"
    done
    # Hives and their logs, from the shared corpus.
    while IFS= read -r -d '' f; do
        out=$seeds/hive_index/$(basename "$f" .xz)
        xz -dc "$f" >"$out"
        [ "$(stat -c %s "$out")" -le 1048576 ] || rm "$out"
    done < <(find "$corpus" -name '*.xz' ! -name '*.LOG*' -print0)
    for d in "$corpus"/logs/*/; do
        hive=$(find "$d" -name '*.xz' ! -name '*.LOG*' ! -name 'Recovered*' | awk 'NR == 1')
        [ -n "$hive" ] || continue
        parts=("$tmp/h")
        xz -dc "$hive" >"$tmp/h"
        for n in 1 2; do
            log=$(find "$d" -name "*.LOG$n.xz" | awk 'NR == 1')
            : >"$tmp/l$n"
            [ -n "$log" ] && xz -dc "$log" >"$tmp/l$n"
            parts+=("$tmp/l$n")
        done
        "$bin" --frame "$seeds/replay/$(basename "$d")" "${parts[@]}"
    done
    for t in "${all[@]}"; do
        if [ -z "$(ls -A "$seeds/$t")" ]; then
            echo "fuzz.sh: no seed for $t" >&2
            exit 1
        fi
    done
    rm -rf "$tmp"
    touch "$seeds/.made"
fi

# 3. Each target for $seconds, $jobs at a time; what crashed or hung is kept.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
    AFL_NO_AFFINITY=1 AFL_FAST_CAL=1 AFL_QUIET=1
logs=$work/logs
mkdir -p "$logs" "$work/out"
run() {
    local t=$1 out=$work/out/$1
    rm -rf "$out"
    afl-fuzz -V "$seconds" -t 2000 -i "$seeds/$t" -o "$out" -- "$bin" "$t" >"$logs/$t.log" 2>&1
}
pids=()
names=()
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    run "$t" &
    pids+=($!)
    names+=("$t")
done
status=0
for i in "${!pids[@]}"; do
    t=${names[$i]}
    if ! wait "${pids[$i]}"; then
        echo "fuzz.sh: afl-fuzz did not run $t:" >&2
        tail -n 20 "$logs/$t.log" >&2
        status=1
        continue
    fi
    stats=$work/out/$t/default/fuzzer_stats
    execs=$(awk -F' *: *' '$1 == "execs_done" { print $2 }' "$stats")
    edges=$(awk -F' *: *' '$1 == "edges_found" { print $2 }' "$stats")
    found=0
    for kind in crashes hangs; do
        for f in "$work/out/$t/default/$kind"/id:*; do
            [ -f "$f" ] || continue
            # Kept as small as it still fails (afl-tmin), else as found.
            small=$work/out/$t/min
            if [ "$kind" = crashes ] && AFL_MAP_SIZE=4194304 timeout 120 \
                afl-tmin -i "$f" -o "$small" -- "$bin" "$t" >/dev/null 2>&1; then
                f=$small
            fi
            mkdir -p "tests/fixtures/fuzz/$t"
            what=crash
            [ "$kind" = hangs ] && what=hang
            cp "$f" "tests/fixtures/fuzz/$t/$what-$(sha256sum <"$f" | cut -c1-16)"
            found=$((found + 1))
        done
    done
    printf '%-12s %s runs, %s edges, %s crash(es)/hang(s)\n' "$t" "$execs" "$edges" "$found"
    [ "$found" = 0 ] || status=1
done
[ "$status" = 0 ] || echo "fuzz.sh: findings copied to tests/fixtures/fuzz/ (replayed by tests/fuzz_regressions.rs)" >&2
exit "$status"
