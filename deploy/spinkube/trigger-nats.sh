#!/bin/bash
# Entrypoint of the trigger-nats image (deploy/Dockerfile): runs the plugin as `spin up`
# would (SPIN_LOCKED_URL, SPIN_WORKING_DIR and the options come from the Deployment) and,
# as it serves nothing to probe, creates $TRIGGER_READY_FILE once its log says the NATS
# trigger runs (its stream and durable consumers exist). Its output still reaches the
# container log, line by line until then and through `cat` after. `exec` keeps
# trigger-nats the process that gets SIGTERM and drains.
set -euo pipefail
ready="${TRIGGER_READY_FILE:-/tmp/trigger-nats-ready}"
rm -f "$ready"
mkdir -p "${SPIN_WORKING_DIR:?SPIN_WORKING_DIR is not set}"
exec trigger-nats "$@" > >(
    while IFS= read -r line; do
        printf '%s\n' "$line"
        if [[ $line == *"NATS trigger running"* ]]; then
            : > "$ready"
            break
        fi
    done
    exec cat
) 2>&1
