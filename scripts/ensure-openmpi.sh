#!/usr/bin/env bash
# Makes sure Open MPI (mpirun, mpicc, libmpi.so.40) is installed, for the mpi communication backend and its tests.
# Idempotent: does nothing when mpirun and libmpi are present. Otherwise installs Debian/Ubuntu's openmpi-bin and
# libopenmpi-dev with apt-get, as root or through sudo without a password. When it cannot, it says why and returns
# non-zero; the mpi tests then skip (naming the packages), they do not fail.
#   scripts/ensure-openmpi.sh            install if missing
#   SHARDWISE_NO_MPI_INSTALL=1 ...       only check, never install
set -uo pipefail

packages="openmpi-bin libopenmpi-dev"

have_openmpi() {
  command -v mpirun >/dev/null 2>&1 && command -v mpicc >/dev/null 2>&1 &&
    { ldconfig -p 2>/dev/null | grep -q 'libmpi\.so\.40' || [ -e /usr/lib/x86_64-linux-gnu/libmpi.so.40 ]; }
}

if have_openmpi; then
  exit 0
fi
if [ -n "${SHARDWISE_NO_MPI_INSTALL:-}" ]; then
  echo "ensure-openmpi: Open MPI is missing and SHARDWISE_NO_MPI_INSTALL is set; install $packages to run the mpi tests" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-openmpi: Open MPI is missing and apt-get is not available; install Open MPI 4.x ($packages on Debian/Ubuntu) yourself" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "ensure-openmpi: Open MPI is missing and installing needs root (no passwordless sudo): run  sudo apt-get install -y $packages" >&2
  exit 1
fi
echo "ensure-openmpi: installing $packages (for the mpi backend's tests)..." >&2
log="$(mktemp)"
if ! { "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq $packages; } >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  rm -f "$log"
  echo "ensure-openmpi: apt-get could not install $packages (offline?); the mpi tests will be skipped" >&2
  exit 1
fi
rm -f "$log"
if have_openmpi; then
  echo "ensure-openmpi: $(mpirun --version 2>/dev/null | head -n 1)" >&2
  exit 0
fi
echo "ensure-openmpi: installed $packages but mpirun, mpicc or libmpi.so.40 is still missing" >&2
exit 1
