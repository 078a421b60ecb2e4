#!/usr/bin/env bash
# Installs what wingold's build, tests and demo need on Debian 12, only what is missing.
set -euo pipefail

PACKAGES=(
  pkg-config libclang-dev build-essential
  libhivex-dev libhivex-bin          # hives (and hivexget, hivexsh as test oracles)
  libwin-hivex-perl                  # hivexregedit: fixture hives from .reg text, test oracle
  ntfs-3g ntfs-3g-dev                # NTFS (and ntfsls/ntfscat/ntfsfix/mkntfs for tests)
  qemu-utils                         # qemu-img, qemu-io: test oracles and fixtures
  fdisk gdisk                        # sfdisk, sgdisk: partitioned test disks
  xorriso xz-utils                   # fixture ISOs, the hive corpus
  time                               # /usr/bin/time: peak memory in make bench
  libvirt-clients libxml2-utils      # virt-xml-validate (+ xmllint) for the libvirt recipes
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A full QEMU for the launch tests. Debian 12's own qemu-system-x86 (7.2) refuses to
# install beside the qemu-utils from bookworm-backports these machines carry, so take
# QEMU from backports too (reference/machine-notes.md).
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "setup: adding the bookworm-backports suite to apt's sources" >&2
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      | $sudo tee /etc/apt/sources.list.d/wingold-backports.sources >/dev/null
  fi
  echo "setup: installing qemu-system-x86 from bookworm-backports" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    -t bookworm-backports qemu-system-x86 qemu-system-common qemu-system-data >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install a Rust toolchain (rustup) and run again" >&2
  exit 1
fi
