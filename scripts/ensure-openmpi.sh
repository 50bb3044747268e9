#!/usr/bin/env bash
# Makes sure Open MPI (mpirun, mpicc, libmpi.so.40) is installed, for the mpi communication backend and its tests.
# Idempotent: does nothing when mpirun and libmpi are present. Otherwise installs Debian/Ubuntu's openmpi-bin and
# libopenmpi-dev with apt-get, as root or through sudo without a password. When it cannot, it says why and returns
# non-zero; the mpi tests then skip (naming the packages), they do not fail.
#   scripts/ensure-openmpi.sh            install if missing
#   SHARDWISE_NO_MPI_INSTALL=1 ...       only check, never install
set -uo pipefail
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/apt-install.sh"

packages="openmpi-bin libopenmpi-dev"

have_openmpi() {
  command -v mpirun >/dev/null 2>&1 && command -v mpicc >/dev/null 2>&1 &&
    { ldconfig -p 2>/dev/null | grep -q 'libmpi\.so\.40' || [ -e /usr/lib/x86_64-linux-gnu/libmpi.so.40 ]; }
}

have_openmpi && exit 0
shardwise_apt_install ensure-openmpi "$packages" "the mpi backend's tests" SHARDWISE_NO_MPI_INSTALL || exit 1
if have_openmpi; then
  echo "ensure-openmpi: $(mpirun --version 2>/dev/null | head -n 1)" >&2
  exit 0
fi
echo "ensure-openmpi: installed $packages but mpirun, mpicc or libmpi.so.40 is still missing" >&2
exit 1
