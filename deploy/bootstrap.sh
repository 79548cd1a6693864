#!/bin/sh
# The compose stack's one-shot `bootstrap`: data, a first model, the online store.
# Idempotent: each step runs only when what it makes is missing, so a second
# `docker compose up` (or a restart) skips straight through and never replaces a
# champion, data version or online state that live traffic has moved on since.
# BOOTSTRAP_GENERATE_ARGS: extra `fraudops generate` options (a smaller demo: "--days 90").
set -eu

state="${FRAUDOPS_HOME:-.fraudops}/bootstrap"
mkdir -p "$state"

if ls -d "${FRAUDOPS_DATA_DIR:-data}"/raw/day=* >/dev/null 2>&1; then
    echo "bootstrap: data/raw has data, generate skipped"
else
    # shellcheck disable=SC2086  # the options are meant to split into words
    fraudops generate ${BOOTSTRAP_GENERATE_ARGS:-}
fi

if python - <<'PY'
import sys

from fraudops.config import get_settings
from fraudops.tracking.registry import CHAMPION, configure_mlflow, version_by_alias

settings = get_settings()
found = version_by_alias(configure_mlflow(settings), settings.model_name, CHAMPION)
sys.exit(0 if found else 1)
PY
then
    echo "bootstrap: a champion is registered, train skipped"
else
    fraudops train --tag origin=bootstrap
fi

if [ -e "$state/backfill.done" ]; then
    echo "bootstrap: online store backfilled before, backfill skipped"
else
    fraudops backfill
    touch "$state/backfill.done"
fi
echo "bootstrap: done"
