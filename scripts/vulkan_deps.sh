#!/usr/bin/env bash
# Build dependencies of llama.cpp's Vulkan backend (issue 6), for Debian 12 and its kin:
#   glslc                shader compiler (bookworm: 2023.2)
#   libvulkan-dev        the Vulkan loader to link against (bookworm: 1.3.239)
#   spirv-headers        ggml-vulkan's find_package(SPIRV-Headers CONFIG REQUIRED)
#   mesa-vulkan-drivers  lavapipe: a real Vulkan device that runs on the CPU (tests, CI)
#   vulkan-tools         vulkaninfo, to see which devices the loader finds
# and newer Vulkan headers where the system's are too old: bookworm's 1.3.239 lack
# vk::LayerSettingEXT, which the llama.cpp vendored by llama-cpp-python 0.3.36 uses.
# Then Debian 13 (trixie)'s libvulkan-dev .deb is downloaded with a trixie source list
# kept apart from the system's (its own Dir::State::Lists, Dir::Cache, SourceList) and
# unpacked with dpkg -x into .deps/vulkan-headers/ (header-only use; nothing of it is
# installed). Idempotent: when everything is there it touches neither apt nor the network.
#
# The last line on stdout is the include dir for -DVulkan_INCLUDE_DIR.
# Exit status: 0 ready; 69 a dependency could not be obtained (no apt-get, not root and
# no password-less sudo, apt unreachable); 1 anything else.
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian) for the trixie download.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPS=$ROOT/.deps
HEADERS=$DEPS/vulkan-headers
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=(glslc libvulkan-dev spirv-headers mesa-vulkan-drivers vulkan-tools)

log() { echo "vulkan_deps: $*" >&2; }
unavailable() { log "error: $*"; exit 69; }

# Headers new enough for the vendored llama.cpp: vulkan.hpp declares vk::LayerSettingEXT.
new_enough() { grep -qs "struct LayerSettingEXT" "$1/vulkan/vulkan_structs.hpp"; }

LIMIT=()
command -v timeout >/dev/null 2>&1 && LIMIT=(timeout 900)
SUDO=()
need_root() {
  command -v apt-get >/dev/null 2>&1 || unavailable "no apt-get: install $* by hand"
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      SUDO=(sudo -n)
    else
      unavailable "not root and no password-less sudo: install $* by hand"
    fi
  fi
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root "${missing[*]}"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${LIMIT[@]}" "${SUDO[@]}" apt-get update -q >/dev/null ||
    unavailable "apt-get update failed (no network to the Debian mirror?)"
  "${LIMIT[@]}" "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
    unavailable "apt-get install ${missing[*]} failed"
fi
for pkg in "${PACKAGES[@]}"; do
  log "$pkg $(dpkg-query -W -f='${Version}' "$pkg")"
done

if new_enough /usr/include; then
  log "the system's Vulkan headers are new enough"
  echo /usr/include
  exit 0
fi

INCLUDE=$HEADERS/usr/include
if ! new_enough "$INCLUDE"; then
  command -v apt-get >/dev/null 2>&1 || unavailable "no apt-get to download trixie's libvulkan-dev"
  APT_DIR=$DEPS/apt-trixie
  mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/download"
  # Debian 12's debian-archive-keyring holds the keys that sign trixie.
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR trixie main" \
    >"$APT_DIR/sources.list"
  APT_OPTS=(
    -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$APT_DIR/lists"
    -o "Dir::Cache=$APT_DIR/cache"
    -o "APT::Sandbox::User=$(id -un)"
    -o "Debug::NoLocking=true"
  )
  log "downloading Debian 13's libvulkan-dev (headers only) from $MIRROR"
  # apt-get update exits 0 when a fetch fails; no Packages file afterwards tells.
  rm -rf "$APT_DIR/lists" && mkdir -p "$APT_DIR/lists/partial"
  "${LIMIT[@]}" apt-get "${APT_OPTS[@]}" update -q >/dev/null || true
  compgen -G "$APT_DIR/lists/*_dists_trixie_main_binary-*_Packages*" >/dev/null ||
    unavailable "apt-get update of the trixie list failed (no network to $MIRROR?)"
  rm -f "$APT_DIR"/download/*.deb
  (cd "$APT_DIR/download" &&
    "${LIMIT[@]}" apt-get "${APT_OPTS[@]}" download -q libvulkan-dev/trixie >&2) ||
    unavailable "apt-get download libvulkan-dev (trixie) failed"
  deb=$(echo "$APT_DIR"/download/libvulkan-dev_*.deb)
  [ -f "$deb" ] || { log "error: no libvulkan-dev .deb in $APT_DIR/download"; exit 1; }
  rm -rf "$HEADERS.tmp"
  dpkg -x "$deb" "$HEADERS.tmp"
  new_enough "$HEADERS.tmp/usr/include" ||
    { log "error: $(basename "$deb") has no vk::LayerSettingEXT either"; exit 1; }
  rm -rf "$HEADERS"
  mv "$HEADERS.tmp" "$HEADERS"
  basename "$deb" >"$HEADERS/SOURCE"
fi
log "Vulkan headers: $INCLUDE ($(cat "$HEADERS/SOURCE" 2>/dev/null || echo unknown))"
echo "$INCLUDE"
