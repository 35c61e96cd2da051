#!/bin/sh
# Run $SERVICE: migrate its database, then hand the process over to gunicorn (signals reach it).
# With arguments, run those instead (e.g. `flask --app chat_service token <user>`), without migrating.
set -eu

if [ "$#" -gt 0 ]; then
    exec "$@"
fi

case "${SERVICE:-}" in
    chat_service | conversation_service) ;;
    *)
        echo "SERVICE must be chat_service or conversation_service (got '${SERVICE:-}')" >&2
        exit 64
        ;;
esac

# prometheus-client writes each process's values there (shared/metrics.py); gunicorn empties it at start.
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi

flask --app "$SERVICE" db upgrade
config=$(python -c 'import importlib.util, pathlib, sys
print(pathlib.Path(importlib.util.find_spec(sys.argv[1]).origin).with_name("gunicorn.conf.py"))' "$SERVICE")
exec gunicorn --config "$config" "$SERVICE:create_app()"
