# Sourced by the ensure-*.sh scripts: installs Debian/Ubuntu packages a test suite needs, when it can.
#
#   shardwise_apt_install NAME "PACKAGES" "WHAT FOR" NO_INSTALL_VARIABLE
#
# Installs PACKAGES with apt-get, as root or through sudo without a password; first without refreshing the package
# lists (fast when they are current), then after apt-get update. NAME prefixes the messages (e.g. ensure-onednn).
# When NO_INSTALL_VARIABLE is set in the environment, or apt-get or root is missing, or the install fails, it says
# why and returns non-zero; the caller then checks that what it needs is really there.
shardwise_apt_install() {
  local name="$1" packages="$2" purpose="$3" no_install="$4"
  if [ -n "${!no_install:-}" ]; then
    echo "$name: $packages missing and $no_install is set; install them to run $purpose" >&2
    return 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$name: apt-get is not available; install $packages (Debian/Ubuntu names) or their equivalents yourself" >&2
    return 1
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "$name: installing needs root (no passwordless sudo): run  sudo apt-get install -y $packages" >&2
      return 1
    fi
  fi
  echo "$name: installing $packages (for $purpose)..." >&2
  local log
  log="$(mktemp)"
  if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq $packages >"$log" 2>&1; then
    if ! { "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq $packages; } >>"$log" 2>&1; then
      tail -n 20 "$log" >&2
      rm -f "$log"
      echo "$name: apt-get could not install $packages (offline?); $purpose will be skipped" >&2
      return 1
    fi
  fi
  rm -f "$log"
}
