#!/usr/bin/env bash
# Makes sure oneDNN 2.x (libdnnl.so.2, Debian/Ubuntu package libdnnl2) is installed, for the bf16 matrix products
# in core's kernels/onednn and their tests. Only the runtime library is needed (no headers: Java calls it through FFM).
# Idempotent: does nothing when libdnnl.so.2 is present. Otherwise installs libdnnl2 with apt-get, as root or through
# sudo without a password. When it cannot, it says why and returns non-zero; the oneDNN tests then skip (naming the
# package), they do not fail.
#   scripts/ensure-onednn.sh             install if missing
#   SHARDWISE_NO_ONEDNN_INSTALL=1 ...    only check, never install
set -uo pipefail
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/apt-install.sh"

packages="libdnnl2"

have_onednn() {
  ldconfig -p 2>/dev/null | grep -q 'libdnnl\.so\.2' || [ -e /usr/lib/x86_64-linux-gnu/libdnnl.so.2 ] ||
    [ -e /usr/lib/aarch64-linux-gnu/libdnnl.so.2 ]
}

have_onednn && exit 0
shardwise_apt_install ensure-onednn "$packages" "the bf16 oneDNN kernels' tests" SHARDWISE_NO_ONEDNN_INSTALL || exit 1
if have_onednn; then
  echo "ensure-onednn: $(dpkg-query -W -f='${Package} ${Version}' $packages 2>/dev/null)" >&2
  exit 0
fi
echo "ensure-onednn: installed $packages but libdnnl.so.2 is still missing" >&2
exit 1
