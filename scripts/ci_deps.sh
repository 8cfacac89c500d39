#!/usr/bin/env bash
# System tools some tests need, from Debian/Ubuntu packages, installed only if missing:
#   caddy           tests/e2e/test_caddy.py (ggufd behind a reverse proxy)
#   strace          tests/e2e/test_offline.py (no outbound connections)
#   systemd-analyze the systemd unit test (package systemd)
#   unshare         tests/e2e/test_offline.py (package util-linux)
# Idempotent, and never fails CI: without apt, sudo or a network it prints a warning and
# the tests that need a missing tool skip, saying why.
set -uo pipefail

warn() { echo "ci_deps: warning: $*" >&2; }

declare -A PACKAGE=([caddy]=caddy [strace]=strace [systemd-analyze]=systemd [unshare]=util-linux)
missing=()
for tool in caddy strace systemd-analyze unshare; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGE[$tool]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "ci_deps: caddy, strace, systemd-analyze and unshare are installed"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  warn "no apt-get; not installing ${missing[*]} (the tests that need them will skip)"
  exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    warn "not root and no password-less sudo; not installing ${missing[*]}"
    exit 0
  fi
fi
LIMIT=()
command -v timeout >/dev/null 2>&1 && LIMIT=(timeout 600)

echo "ci_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${LIMIT[@]}" "${SUDO[@]}" apt-get update -q >/dev/null || warn "apt-get update failed"
if ! "${LIMIT[@]}" "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
  warn "apt-get install ${missing[*]} failed (the tests that need them will skip)"
  exit 0
fi
# The caddy package enables a service on :80 where systemd runs; the tests start their own.
if [[ " ${missing[*]} " == *" caddy "* ]] && [ -d /run/systemd/system ]; then
  "${SUDO[@]}" systemctl disable --now caddy.service >/dev/null 2>&1 || true
fi
command -v caddy >/dev/null 2>&1 && echo "ci_deps: caddy $(caddy version | head -n1)"
command -v strace >/dev/null 2>&1 && echo "ci_deps: $(strace -V | head -n1)"
exit 0
