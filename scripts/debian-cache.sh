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

# sid_download PACKAGE VERSION DIR: fetches PACKAGE's .deb of that version
# into DIR. `apt-get download` silently fetches nothing for a version whose
# architecture is `all` when the host has the package installed for its own
# architecture (linux-libc-dev became `all` with Linux 7.2), so the file is
# then fetched by apt's own transport (apt-helper), from the archive apt
# lists it in, and checked against the SHA256 of apt's package list.
sid_download() {
  local pkg=$1 ver=$2 dir=$3 file sha base
  ( cd "$dir" && apt-get download -qq -o APT::Sandbox::User=root "$pkg=$ver" ) >&2 || true
  compgen -G "$dir/${pkg}_*.deb" >/dev/null && return 0
  file=$(apt-cache show "$pkg=$ver" 2>/dev/null | awk '/^Filename:/ { print $2; exit }')
  sha=$(apt-cache show "$pkg=$ver" 2>/dev/null | awk '/^SHA256:/ { print $2; exit }')
  # In `apt-cache policy`, the line after " VERSION PRIO" names the archive: " PRIO URI sid/main ARCH Packages".
  base=$(apt-cache policy "$pkg" | awk -v v="$ver" '$1 == v || ($1 == "***" && $2 == v) { getline; print $2; exit }')
  [ -n "$file" ] && [ -n "$sha" ] && [ -n "$base" ] || return 1
  /usr/lib/apt/apt-helper -o APT::Sandbox::User=root download-file "$base/$file" "$dir/$(basename "$file")" "SHA256:$sha" >&2
}
