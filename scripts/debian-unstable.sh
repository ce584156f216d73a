#!/bin/bash
# Make Debian unstable (sid) packages available to apt without ever preferring
# them: the suite is added at pin priority 90, so `apt-get install foo` still
# takes the host's release and only `foo/sid` (or `apt-get download foo/sid`)
# reaches unstable. We need it for the newest kernel (scripts/vmrun) and its
# UAPI headers (scripts/uapi-headers.sh).
#
# The archive address and signing key are the host's own, read at run time from
# its apt configuration, so this works behind whatever mirror the host uses.
# Idempotent: `apt-get update` runs only when a source was added or sid's
# package lists are missing. Needs root when it has something to change.
#
#   scripts/debian-unstable.sh [--check | --no-update]
#
# --check: change nothing, exit 0 if the source, the pin and sid's package
#   lists are all in place, 1 if not (scripts/install-deps.sh asks this).
# --no-update: leave the `apt-get update` to the caller, which runs one for
#   everything it installs (scripts/install-deps.sh).
set -euo pipefail

mode=${1:-}
case "$mode" in
  ''|--check|--no-update) ;;
  *) echo "usage: debian-unstable.sh [--check | --no-update]" >&2; exit 2 ;;
esac

SRC_DIR=/etc/apt/sources.list.d
SRC=$SRC_DIR/ublk-ts-unstable.sources
PREF=/etc/apt/preferences.d/ublk-ts-unstable
LISTS=/var/lib/apt/lists

say() { echo "debian-unstable: $*" >&2; }
die() { say "$*"; exit 1; }

# True if some enabled apt source already carries sid/unstable (ours, or e.g.
# the shared vmrun tool's): apt warns about suites configured twice.
have_sid_source() {
  local f
  for f in "$SRC_DIR"/*.sources; do
    [ -f "$f" ] || continue
    # deb822: a stanza with `Suites: ... sid|unstable ...` and not `Enabled: no`.
    awk 'BEGIN { RS = ""; found = 0 }
         /(^|\n)[Ss]uites:[^\n]*[ \t](sid|unstable)([ \t]|\n|$)/ &&
         !/(^|\n)[Ee]nabled:[ \t]*[Nn]o/ { found = 1 }
         END { exit !found }' "$f" && return 0
  done
  for f in /etc/apt/sources.list "$SRC_DIR"/*.list; do
    [ -f "$f" ] || continue
    grep -qE '^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+(sid|unstable)([[:space:]]|$)' "$f" && return 0
  done
  return 1
}

# Prints "URI<TAB>SIGNED_BY" for the host's main (non-security) Debian archive.
host_archive() {
  local f line
  for f in "$SRC_DIR"/debian.sources "$SRC_DIR"/*.sources; do
    [ -f "$f" ] || continue
    # First enabled deb stanza whose suites are not -security; Signed-By only
    # when it is a file path (an inline key block spans several lines).
    line=$(awk 'BEGIN { RS = "" }
      {
        uri = ""; key = ""; types = ""; suites = ""; enabled = 1
        n = split($0, l, "\n")
        for (i = 1; i <= n; i++) {
          if (l[i] ~ /^#/) continue
          if (match(l[i], /^[A-Za-z-]+:/)) {
            k = tolower(substr(l[i], 1, RLENGTH - 1)); v = substr(l[i], RLENGTH + 1)
            sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v)
            if (k == "types") types = v
            else if (k == "uris") { split(v, u, /[ \t]+/); uri = u[1] }
            else if (k == "suites") suites = v
            else if (k == "signed-by" && v ~ /^\//) key = v
            else if (k == "enabled" && v ~ /^[Nn]o/) enabled = 0
          }
        }
        if (enabled && types ~ /(^|[ \t])deb([ \t]|$)/ && uri != "" && suites !~ /-security/ && uri !~ /security/) {
          print uri "\t" key; exit
        }
      }' "$f")
    [ -n "$line" ] && { echo "$line"; return 0; }
  done
  # One-line format: deb [opts] URI suite components...
  for f in /etc/apt/sources.list "$SRC_DIR"/*.list; do
    [ -f "$f" ] || continue
    line=$(awk '/^[ \t]*deb[ \t]/ && $0 !~ /security/ {
        key = ""; i = 2
        if ($2 ~ /^\[/) {
          opts = ""
          for (; i <= NF; i++) { opts = opts " " $i; if ($i ~ /\]$/) { i++; break } }
          if (match(opts, /signed-by=[^] \t]+/)) key = substr(opts, RSTART + 10, RLENGTH - 10)
        }
        print $i "\t" key; exit
      }' "$f")
    [ -n "$line" ] && { echo "$line"; return 0; }
  done
  return 1
}

# Without the pin a plain `apt-get upgrade` would move the whole host to
# unstable, so it is checked whoever added the source.
want_pref=$'# Added by ublk-ts scripts/debian-unstable.sh: never prefer unstable.\nPackage: *\nPin: release n=sid\nPin-Priority: 90'
pref_ok() { [ "$(cat "$PREF" 2>/dev/null)" = "$want_pref" ]; }
# A sid source that was configured but never fetched (or whose lists were
# cleaned) needs an update too.
sid_lists() {
  compgen -G "$LISTS/*_dists_sid_*Packages*" >/dev/null ||
    compgen -G "$LISTS/*_dists_unstable_*Packages*" >/dev/null
}

if [ "$mode" = --check ]; then
  have_sid_source && pref_ok && sid_lists
  exit
fi

need_update=0
have_src=0
have_sid_source && have_src=1

# The pin goes in first, so that sid is never configured unpinned.
if ! pref_ok; then
  [ "$(id -u)" = 0 ] || die "must run as root to write $PREF"
  printf '%s\n' "$want_pref" > "$PREF.tmp"
  chmod 644 "$PREF.tmp"
  mv "$PREF.tmp" "$PREF"
  # Where we add the source too, its message says this.
  [ "$have_src" = 0 ] || say "pinned Debian unstable at priority 90 ($PREF) so that apt never prefers it"
fi

if [ "$have_src" = 0 ]; then
  [ "$(id -u)" = 0 ] || die "must run as root to add the unstable apt source"
  arch=$(host_archive) || die "cannot find the host's Debian archive in /etc/apt/sources.list{,.d/*}"
  uri=${arch%%$'\t'*}
  key=${arch#*$'\t'}
  if [ -z "$key" ] && [ -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
    key=/usr/share/keyrings/debian-archive-keyring.gpg
  fi
  tmp=$(mktemp "$SRC.XXXXXX")
  {
    echo "# Added by ublk-ts scripts/debian-unstable.sh (pinned low by $PREF)."
    echo "Types: deb"
    echo "URIs: $uri"
    echo "Suites: sid"
    echo "Components: main"
    [ -z "$key" ] || echo "Signed-By: $key"
  } > "$tmp"
  chmod 644 "$tmp"
  mv "$tmp" "$SRC"
  say "added Debian unstable as an apt source ($SRC), pinned at priority 90 so that apt never prefers it: the VM tests need its newest kernel and UAPI headers (Linux 7.2+)"
  need_update=1
fi

sid_lists || need_update=1

if [ "$need_update" = 1 ] && [ "$mode" != --no-update ]; then
  [ "$(id -u)" = 0 ] || die "must run as root to run apt-get update"
  say "apt-get update (to fetch Debian unstable's package lists)"
  apt-get update -qq >/dev/null || die "apt-get update failed"
fi
