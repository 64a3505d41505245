#!/usr/bin/env bash
# Installs redis-server from Debian's packages when it is missing; the
# peer benchmarks start their own redis-server on a free loopback port.
set -euo pipefail
command -v redis-server >/dev/null && exit 0
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq redis-server >/dev/null
# Debian's package starts a system service; the benchmarks do not use it.
$SUDO service redis-server stop >/dev/null 2>&1 || true
