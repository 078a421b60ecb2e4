#!/usr/bin/env bash
# `make demo`: the main job end to end on files it makes itself.
#
# With no configuration it builds a phony Windows Server 2022 disk and a fixture
# virtio-win ISO (the test fixture builder), then runs `wingold build` with
# assets/demo.toml. With WINGOLD_CONFIG=/path/to/wingold.toml (a real installed
# base image and a real virtio-win source) it runs the real thing.
set -euo pipefail
bin=$(realpath "$1")
dir=$2
rm -rf "$dir"
mkdir -p "$dir"
dir=$(realpath "$dir")
step() { printf '\n== %s\n' "$*"; }

if [ -n "${WINGOLD_CONFIG:-}" ]; then
  config=$(realpath "$WINGOLD_CONFIG")
  step "wingold build -c $config"
  "$bin" build -c "$config"
  exit 0
fi

step "wingold disks --id 10 --no-hdb: the system disk (HDA) and the install recipe (Windows on IDE; no temporary disk)"
"$bin" disks --id 10 --dir "$dir" --hda-size 20G --no-hdb \
  --iso "$dir/windows.iso" --virtio-iso "$dir/virtio-win-0.1.999.iso" --script "$dir/install_10.sh"
qemu-img check -q "$dir/vm_10.qcow2" && echo "qemu-img check: clean"
sed -n '1,12p' "$dir/install_10.sh"; echo "  ..."

step "a phony, installed Windows Server 2022 disk and a virtio-win ISO (the test fixture builder)"
cargo run --release --quiet --example phony_windows -- "$dir/phony" 2k22 0.1.999
mv "$dir/phony/virtio-win-0.1.999.iso" "$dir/"
cp assets/demo.toml "$dir/wingold.toml"
sed -i 's|^\[virtio_win\]|[virtio_win]\ncache = "cache"|' "$dir/wingold.toml"

step "wingold fetch --list-drivers --for-image: which virtio-win folders serve this Windows"
"$bin" fetch --url "file://$dir/virtio-win-0.1.999.iso" --cache "$dir/cache" --lock "$dir/wingold.lock" \
  --list-drivers --for-image "$dir/phony/phony.qcow2" | head -n 8

step "wingold inspect: partitions, Windows, hives, the settings and the virtio drivers as they are"
"$bin" inspect "$dir/phony/phony.qcow2"

step "wingold inject --drivers --dry-run: the virtio drivers the build will put in, offline"
"$bin" inject "$dir/phony/phony.qcow2" --drivers "$dir/virtio-win-0.1.999.iso" --dry-run | sed -n '/^virtio drivers/,$p'

step "wingold build -c wingold.toml: fetch, inject, finalize, verify, manifest"
"$bin" build -c "$dir/wingold.toml"
qemu-img check -q "$dir/golden/phony-2022.qcow2" && echo "qemu-img check: clean"

step "wingold build again: nothing changed, nothing written"
"$bin" build -c "$dir/wingold.toml"

step "wingold inspect golden: the manifest, every setting as the profiles want it, the drivers"
"$bin" inspect "$dir/golden/phony-2022.qcow2" | sed -n '/^settings of/,$p'

step "wingold clone --id 11 --hostname web-11: a new VM, its own machine, with its run recipe"
mkdir -p "$dir/vms"
"$bin" clone "$dir/golden/phony-2022.qcow2" --id 11 --hostname web-11 --dir "$dir/vms"
echo "  what the clone holds (read back by inspect):"
"$bin" inspect "$dir/vms/vm_11.qcow2" | grep '^identity:' | sed 's/^/  /'
qemu-img info --backing-chain "$dir/vms/vm_11.qcow2" | grep -E '^(image|backing file):'
echo "  its run recipe boots the system disk on virtio-blk:"
grep -E "virtio-blk-pci,drive=hda" "$dir/vms/vm_11.sh" | sed 's/^/  /'

step "a changed input makes a new golden version; the clone keeps the one it was made from"
printf 'Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Demo]\r\n"Rebuilt"=dword:00000001\r\n' > "$dir/demo.reg"
sed -i 's|^\[golden\]|[golden]\nregfiles = ["demo.reg"]|' "$dir/wingold.toml"
"$bin" build -c "$dir/wingold.toml"
ls -1 "$dir/golden" | grep -E -- '-[0-9a-f]{12}\.qcow2$' | sed 's/^/  /'
echo "  phony-2022.qcow2 -> $(readlink "$dir/golden/phony-2022.qcow2")"
"$bin" inspect "$dir/vms/vm_11.qcow2" | grep -A1 '^golden version'

step "wingold gc --dry-run: which old versions nobody uses"
"$bin" gc "$dir/golden/phony-2022.qcow2" --keep 0 --clones "$dir/vms" --dry-run

step "wingold publish: the golden image as a KubeVirt containerDisk, to a registry on loopback"
if command -v docker-registry >/dev/null 2>&1; then
  mkdir -p "$dir/registry"
  printf 'version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:0\n' \
    "$dir/registry/data" > "$dir/registry/config.yml"
  docker-registry serve "$dir/registry/config.yml" > "$dir/registry/access.log" 2> "$dir/registry/log" &
  registry_pid=$!
  trap 'kill $registry_pid 2>/dev/null' EXIT
  port=""
  for _ in $(seq 50); do
    port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$dir/registry/log" | sed 's/.*://' || true)
    [ -n "$port" ] && break
    sleep 0.1
  done
  "$bin" publish "$dir/golden/phony-2022.qcow2" "docker://127.0.0.1:$port/windows/phony-2022:demo" --insecure
  echo "  skopeo inspect:"
  skopeo inspect --tls-verify=false "docker://127.0.0.1:$port/windows/phony-2022:demo" \
    | grep -E '"(Digest|Architecture|Os|io.wingold.golden.sha256|io.wingold.windows.osinfo)"' | sed 's/^ */    /'
  kill $registry_pid 2>/dev/null || true
  wait $registry_pid 2>/dev/null || true
  trap - EXIT
  echo "  (registry stopped)"
else
  echo "  docker-registry is not installed (make setup installs it)"
fi

printf '\nFiles are in %s\n' "$dir"
