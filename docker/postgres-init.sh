#!/usr/bin/env bash
# Runs once, when the postgres container starts on an empty data directory (/docker-entrypoint-initdb.d):
# creates postergenre's own role and database next to Airflow's metadata database, so the two schemas and
# their credentials stay separate. psql variables (:"ident", :'literal') do the quoting.
set -eo pipefail
: "${POSTERGENRE_DB_NAME:?}" "${POSTERGENRE_DB_USER:?}" "${POSTERGENRE_DB_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v db="$POSTERGENRE_DB_NAME" -v owner="$POSTERGENRE_DB_USER" -v password="$POSTERGENRE_DB_PASSWORD" <<'SQL'
CREATE ROLE :"owner" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"owner";
SQL
