#!/usr/bin/env bash
# `make demo`: shows what wingold does today, end to end, on files it makes itself.
set -euo pipefail
bin=$(realpath "$1")
dir=$2
rm -rf "$dir"
mkdir -p "$dir"
cd "$dir"
step() { printf '\n== %s\n' "$*"; }

step "wingold disks --id 10: the system disk (HDA) and the temporary virtio disk (HDB)"
"$bin" disks --id 10 --hda-size 20G --hdb-size 1G
step "qemu-img check / info on what it made"
qemu-img check vm_10.qcow2
qemu-img info vm_10.qcow2

step "a partitioned test disk (MBR: a System Reserved partition, a Windows partition)"
truncate -s 256M phony.raw
printf 'label: dos\n,100M,7,*\n,,7\n' | sfdisk -q phony.raw
truncate -s 100M part1.ntfs
mkntfs -q -F -f -L "System Reserved" -p 2048 -s 512 -H 255 -S 63 part1.ntfs >/dev/null 2>&1
dd if=part1.ntfs of=phony.raw bs=1M seek=1 conv=notrunc status=none
rm part1.ntfs
qemu-img convert -O qcow2 phony.raw phony.qcow2
step "wingold inspect phony.qcow2"
"$bin" inspect phony.qcow2

printf '\nFiles are in %s\n' "$(pwd)"
