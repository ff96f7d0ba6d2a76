#!/usr/bin/env bash
# Installs the Debian packages the test suites need, one package per line in PACKAGES below
# (chromium: the page test of `msd serve`; slurm-wlm and munge: the one-node Slurm cluster of
# the `msd launch slurm` tests). Packages already installed are skipped, and nothing is printed
# when none is missing. Used by `make test` and `.ci/run`. Needs root, or sudo
# without a password; exits 1 (after saying what to install) when it cannot install.
set -euo pipefail

PACKAGES=(
  chromium
  slurm-wlm
  munge
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

say() { echo "install-test-deps: $*" >&2; }
if ! command -v apt-get >/dev/null 2>&1; then
  say "missing ${missing[*]}, and there is no apt-get here; install them by hand"
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    say "missing ${missing[*]}; run as root: apt-get update && apt-get install -y ${missing[*]}"
    exit 1
  fi
fi
say "installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
