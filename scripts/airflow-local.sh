#!/usr/bin/env bash
# Embedded Airflow for postergenre: metadata DB, logs and config under $POSTERGENRE_HOME/airflow (default
# ./.postergenre/airflow), DAGs from ./dags. Migrates the DB, creates the GPU pool, sets the admin password,
# prints URL + login and runs `airflow standalone` (api-server, scheduler, dag-processor, triggerer).
#
#   scripts/airflow-local.sh            # port 8080; AIRFLOW_PORT=8181 scripts/airflow-local.sh for another
#
# Stop: Ctrl-C in its terminal, or `kill -TERM -- -<pgid>` (printed at start): standalone starts its parts as
# children in its process group. Started in the background by a non-interactive shell it ignores SIGINT.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
port="${AIRFLOW_PORT:-8080}"
cd "$repo"
# `airflow standalone` starts each component as `airflow <name>`, found on PATH.
export PATH="$venv/bin:$PATH"
# The local-dev environment (fixed local secrets, one admin) lives in tests/support, outside the shipped
# package; PYTHONPATH is set for these two calls only, never for Airflow itself.
dev_python=(env PYTHONPATH="$repo/tests" "$venv/bin/python")
eval "$("${dev_python[@]}" -m support.airflow_env "$repo" "$port")"
# Also writes $AIRFLOW_HOME/config/airflow_local_settings.py: the scheduler preloads fork-safe libraries so
# that each task process (forked from it) starts warm (postergenre/airflow_preload.py).
read -r GPU_POOL GPU_POOL_SLOTS admin_user < <("${dev_python[@]}" -c \
    'from postergenre.airflow_pools import GPU_POOL, GPU_POOL_SLOTS
from postergenre.config import Settings
from support.airflow_env import ADMIN_USER, install_local_settings
install_local_settings(Settings())
print(GPU_POOL, GPU_POOL_SLOTS, ADMIN_USER)')
mkdir -p "$AIRFLOW_HOME"

pwfile="$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
if [ ! -s "$pwfile" ]; then
    (umask 077 && "$venv/bin/python" -c \
        'import json, secrets, sys; json.dump({sys.argv[1]: secrets.token_urlsafe(12)}, open(sys.argv[2], "w"))' \
        "$admin_user" "$pwfile")
fi
password="$("$venv/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
    "$pwfile" "$admin_user")"

echo "airflow: migrating the metadata DB in $AIRFLOW_HOME" >&2
airflow db migrate >/dev/null
airflow pools set "$GPU_POOL" "$GPU_POOL_SLOTS" "accelerator-bound tasks (training, tuning)" >/dev/null

pgid="$(ps -o pgid= -p $$ | tr -d ' ')"
cat >&2 <<EOF

  Airflow UI:  $AIRFLOW__API__BASE_URL
  login:       $admin_user / $password   (from $pwfile)
  DAGs:        $AIRFLOW__CORE__DAGS_FOLDER   (new DAGs start paused)
  stop:        Ctrl-C  (or: kill -TERM -- -$pgid)

EOF
exec airflow standalone
