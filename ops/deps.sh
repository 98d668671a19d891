#!/usr/bin/env bash
# ops/deps.sh — make sure every Debian package Switchboard needs (to build, test, run the local
# stack and benchmark) is installed.
#
# A fast no-op when everything is present (one dpkg-query). As root it runs `apt-get update` once
# and installs the missing packages; as anyone else it prints the exact command to run and exits 1.
set -euo pipefail

PACKAGES=(
    gcc make pkg-config clang libclang-rt-14-dev
    libuv1-dev libhiredis-dev libpq-dev libmsgpack-dev libjansson-dev libcurl4-openssl-dev libmbedtls-dev
    libwebsockets-dev libwebsockets-evlib-uv
    redis-server postgresql postgresql-client
    python3 python3-websockets curl wrk nginx-light netcat-openbsd procps openssl
    prometheus systemd
    chromium fonts-dejavu-core
)
# Node.js and npm (the browser test drives Chromium with playwright-core from npm): any install will do, so they are
# asked for only when the commands are missing (a machine may carry another distribution's nodejs package, which
# Debian's npm package would conflict with).
command -v node >/dev/null 2>&1 || PACKAGES+=(nodejs)
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)

# dpkg-query prints one line per package it knows; a package it has never heard of only produces
# an error on stderr, so anything not reported as "installed" below is missing.
installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)
missing=()
for p in "${PACKAGES[@]}"; do
    grep -qx "$p installed" <<<"$installed" || missing+=("$p")
done

[ ${#missing[@]} -eq 0 ] && exit 0

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing packages: ${missing[*]}" >&2
    echo "deps.sh: run as root:  apt-get update && $cmd" >&2
    exit 1
fi

echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends "${missing[@]}"
