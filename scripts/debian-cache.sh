# Sourced (not run) by the scripts that fetch packages from Debian unstable
# into ublk-ts's cache (uapi-headers.sh, build-kublk.sh); needs $here set to
# the scripts/ directory.

# The cache: ${UBLK_TS_CACHE:-/var/cache/ublk-ts}, or the checkout's
# .cache/ublk-ts where that is not writable (not root). Sets CACHE.
CACHE=${UBLK_TS_CACHE:-/var/cache/ublk-ts}
if ! mkdir -p "$CACHE" 2>/dev/null || [ ! -w "$CACHE" ]; then
  CACHE=$(dirname "$here")/.cache/ublk-ts
  mkdir -p "$CACHE"
fi

# sid_version PACKAGE: its version in Debian unstable as apt knows it (a local
# lookup), or nothing.
sid_version() {
  apt-cache show --no-all-versions "$1/sid" 2>/dev/null | awk '/^Version:/ { print $2; exit }'
}
