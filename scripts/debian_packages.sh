#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are not installed yet (apt-get,
# through sudo when not root); nothing to do when all are there. Usage: scripts/debian_packages.sh PKG...
set -euo pipefail
missing=""
for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
[ -z "$missing" ] && exit 0
echo "installing Debian packages:$missing" >&2
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
# shellcheck disable=SC2086
$SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >&2
