#!/usr/bin/env bash
# System packages the test suite needs: PostgreSQL (DB tests), docker-compose (static check of docker/) and
# Chromium (browser test of the Airflow plugin). Python-side servers
# (SeaweedFS for S3, s5cmd) come from the lock file. Idempotent: does nothing when all is present.
set -euo pipefail
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ((${#missing[@]})); then
    echo "installing system packages: ${missing[*]}" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
