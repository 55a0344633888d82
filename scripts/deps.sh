#!/usr/bin/env bash
# Install every Debian 12 package that building, testing, fuzzing, the demo and
# the benchmark of popgate need. Idempotent: when everything is installed
# already it only checks (dpkg-query) and exits 0 without touching apt.
#
# Usage: scripts/deps.sh            (as root when something is missing)
#        scripts/deps.sh --check    (report what is missing; exit 1 if any)
#
# Services of the installed packages (dovecot, clamav-daemon, freshclam,
# haproxy, stunnel4) are never started: the tests, the demo and the bench
# start their own instances with generated configs. If /usr/sbin/policy-rc.d
# does not exist, a temporary one that forbids service starts is put in place
# for the install and removed afterwards.
set -euo pipefail

PACKAGES=(
  # build
  build-essential pkg-config
  libuv1-dev libssl-dev libclamav-dev libinih-dev
  # unit tests (cmocka), fuzzing (clang + libFuzzer) and sanitizers
  libcmocka-dev clang libclang-rt-14-dev
  # integration tests, demo and bench: a real upstream and real clients
  dovecot-core dovecot-pop3d
  python3 python3-pytest libpython3.11-testsuite
  curl fetchmail mpop
  # TLS tests: an external TLS scanner (protocols, ciphers, renegotiation, CRIME...)
  testssl.sh
  # scanning: libclamav's engine, clamd, the EICAR-like test files
  clamav clamav-daemon clamav-testfiles
  # certificates, process and socket inspection used by scripts
  openssl ca-certificates procps iproute2 diffutils
  # bench: socat is the byte-relay floor popgate is measured against
  socat
  # bench peers: the TLS part measures popgate against HAProxy and stunnel
  haproxy stunnel4
)

missing_packages() {
  local p status
  for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    # "ii " = installed and configured; anything else (absent, half-installed,
    # config-files only) needs apt-get.
    if [[ "$status" != "ii "* ]]; then
      printf '%s\n' "$p"
    fi
  done
}

mapfile -t missing < <(missing_packages)

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "deps: all ${#PACKAGES[@]} packages installed"
  exit 0
fi

echo "deps: missing: ${missing[*]}"
if [[ "${1:-}" == "--check" ]]; then
  exit 1
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "deps: error: these packages are missing and installing them needs root." >&2
  echo "deps: run as root: scripts/deps.sh" >&2
  echo "deps: or: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

# Keep the packages' own daemons down during the install (a system Dovecot on
# port 110 or a clamd without signatures would only get in the way).
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
fi
cleanup() {
  if [[ $own_policy -eq 1 ]]; then
    rm -f "$policy"
  fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
echo "deps: apt-get update"
apt-get update -q
echo "deps: apt-get install ${missing[*]}"
apt-get install -y -q --no-install-recommends "${missing[@]}"

# Verify: a package that apt could not configure must fail here, not later.
mapfile -t still < <(missing_packages)
if [[ ${#still[@]} -ne 0 ]]; then
  echo "deps: error: still not installed: ${still[*]}" >&2
  exit 1
fi
echo "deps: installed ${#missing[@]} package(s); all ${#PACKAGES[@]} present"
