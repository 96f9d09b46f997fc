#!/usr/bin/env bash
# Liveness probe for every Airflow role this image runs. The role is $1 (docker-compose.yaml passes it) or,
# for a bare `docker run`, read from PID 1's command line. One-shot commands have nothing to probe.
set -euo pipefail
role="${1:-$(tr '\0' ' ' </proc/1/cmdline 2>/dev/null || true)}"
host="${HOSTNAME:-$(hostname)}"
case "$role" in
    *api-server*)
        exec curl --fail --silent --show-error --max-time 10 \
            "http://localhost:${AIRFLOW__API__PORT:-8080}/api/v2/version" -o /dev/null ;;
    *dag-processor*)
        exec airflow jobs check --job-type DagProcessorJob --hostname "$host" ;;
    *scheduler*)
        exec curl --fail --silent --show-error --max-time 10 \
            "http://localhost:${AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT:-8974}/health" -o /dev/null ;;
    *triggerer*)
        exec airflow jobs check --job-type TriggererJob --hostname "$host" ;;
    *worker*)
        exec celery --app airflow.providers.celery.executors.celery_executor.app \
            inspect ping --destination "celery@$host" ;;
    *)
        exit 0 ;;
esac
