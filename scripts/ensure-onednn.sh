#!/usr/bin/env bash
# Makes sure oneDNN 2.x (libdnnl.so.2, Debian/Ubuntu package libdnnl2) is installed, for the bf16 matrix products
# in core's kernels/onednn and their tests. Only the runtime library is needed (no headers: Java calls it through FFM).
# Idempotent: does nothing when libdnnl.so.2 is present. Otherwise installs libdnnl2 with apt-get, as root or through
# sudo without a password. When it cannot, it says why and returns non-zero; the oneDNN tests then skip (naming the
# package), they do not fail.
#   scripts/ensure-onednn.sh             install if missing
#   SHARDWISE_NO_ONEDNN_INSTALL=1 ...    only check, never install
set -uo pipefail

packages="libdnnl2"

have_onednn() {
  ldconfig -p 2>/dev/null | grep -q 'libdnnl\.so\.2' || [ -e /usr/lib/x86_64-linux-gnu/libdnnl.so.2 ] ||
    [ -e /usr/lib/aarch64-linux-gnu/libdnnl.so.2 ]
}

if have_onednn; then
  exit 0
fi
if [ -n "${SHARDWISE_NO_ONEDNN_INSTALL:-}" ]; then
  echo "ensure-onednn: oneDNN is missing and SHARDWISE_NO_ONEDNN_INSTALL is set; install $packages to run the bf16 oneDNN tests" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-onednn: oneDNN is missing and apt-get is not available; install oneDNN 2.x (libdnnl.so.2; $packages on Debian/Ubuntu) yourself" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "ensure-onednn: oneDNN is missing and installing needs root (no passwordless sudo): run  sudo apt-get install -y $packages" >&2
  exit 1
fi
echo "ensure-onednn: installing $packages (for the bf16 oneDNN kernels' tests)..." >&2
log="$(mktemp)"
# Try without refreshing the package lists first (fast when they are current), then with.
if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq $packages >"$log" 2>&1; then
  if ! { "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq $packages; } >>"$log" 2>&1; then
    tail -n 20 "$log" >&2
    rm -f "$log"
    echo "ensure-onednn: apt-get could not install $packages (offline?); the bf16 oneDNN tests will be skipped" >&2
    exit 1
  fi
fi
rm -f "$log"
if have_onednn; then
  echo "ensure-onednn: $(dpkg-query -W -f='${Package} ${Version}' $packages 2>/dev/null)" >&2
  exit 0
fi
echo "ensure-onednn: installed $packages but libdnnl.so.2 is still missing" >&2
exit 1
