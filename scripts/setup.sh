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
  dosfstools mtools                  # EFI system partitions (mkfs.vfat, mmd, mcopy) for tests
  ovmf swtpm swtpm-tools             # UEFI with Secure Boot and a TPM 2.0 for Windows 11 recipes
  time                               # /usr/bin/time: peak memory in make bench
  strace                             # kills and signals at a chosen write (inject_crash); the confined worker watched
  libvirt-clients libxml2-utils      # virt-xml-validate (+ xmllint) for the libvirt recipes
  help2man                           # make man: man pages from the CLI's own help
  genisoimage wimtools               # installer-like ISOs (UDF, install.wim hidden from ISO 9660), test WIMs
  libosinfo-bin                      # osinfo-install-script: osinfo-db's answer files as a reference
  afl++                              # make fuzz: afl-fuzz and its runtime (afl-compiler-rt.o)
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

# The bookworm-backports suite as a deb822 stanza, with the URIs and keyring of the
# machine's own bookworm source (so it goes through whatever mirror or proxy the
# machine already uses); empty when there is none.
backports_stanza() {
  local uri="" keyring=""
  if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    read -r uri keyring < <(awk '
      /^[[:space:]]*$/ { if (ok && uris != "") { print uris, key; exit } ok=0; uris=""; key=""; next }
      /^URIs:/ { uris=$2 }
      /^Signed-By:/ { key=$2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") ok=1 }
      END { if (ok && uris != "") print uris, key }' /etc/apt/sources.list.d/debian.sources) || true
  fi
  if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" { sub(/\[[^]]*\][[:space:]]*/, ""); if ($3 == "bookworm") { print $2; exit } }' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || return 0
  [ -n "$keyring" ] || keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' "$uri" "$keyring"
}

# A full QEMU for the launch tests. Debian 12's own qemu-system-x86 (7.2) refuses to
# install beside the qemu-utils from bookworm-backports these machines carry, so take
# QEMU from backports too. rhsrvany (the first-boot service binary virt-v2v
# installs) is only in backports as well.
need_qemu=0
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_qemu=1
need_rhsrvany=0
[ -e /usr/share/virt-tools/rhsrvany.exe ] || need_rhsrvany=1
if [ $need_qemu -eq 1 ] || [ $need_rhsrvany -eq 1 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "setup: adding the bookworm-backports suite to apt's sources" >&2
    stanza=$(backports_stanza)
    if [ -z "$stanza" ]; then
      echo "setup: no Debian bookworm source found in /etc/apt to derive bookworm-backports from; add that suite by hand and run again" >&2
      exit 1
    fi
    printf '%s\n' "$stanza" | $sudo tee /etc/apt/sources.list.d/wingold-backports.sources >/dev/null
  fi
  $sudo apt-get update -qq
  if [ $need_qemu -eq 1 ]; then
    echo "setup: installing qemu-system-x86 from bookworm-backports" >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports qemu-system-x86 qemu-system-common qemu-system-data >/dev/null
  fi
  if [ $need_rhsrvany -eq 1 ]; then
    echo "setup: installing rhsrvany from bookworm-backports" >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports rhsrvany >/dev/null
  fi
fi

# virt-v2v-in-place, the driver-injection oracle (libguestfs boots a helper VM with
# the machine's kernel, under TCG). After QEMU: libguestfs needs a qemu-system-x86,
# and Debian 12's own one would conflict with the backports qemu-utils.
# Wine's cmd runs the first-boot runner in the tests; virt-copy-in (libguestfs-tools)
# is what make bench times copy-in against; docker-registry, skopeo, umoci,
# htpasswd and openssl are the publish tests' registry, clients and credentials;
# virt-fw-vars (python3-virt-firmware) reads the UEFI variable stores of clones.
ORACLES=(virt-v2v nbdkit linux-image-amd64 wine64 libguestfs-tools
         docker-registry skopeo umoci apache2-utils openssl python3-virt-firmware)
missing=()
for p in "${ORACLES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # docker-registry's package would start a registry on :5000 on every interface:
  # no service starts during this install (tests start their own, on loopback).
  policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ $policy -eq 0 ] || $sudo rm -f /usr/sbin/policy-rc.d
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install a Rust toolchain (rustup) and run again" >&2
  exit 1
fi
