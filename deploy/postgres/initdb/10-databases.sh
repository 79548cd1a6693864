#!/bin/sh
# One database each for MLflow, Prefect and fraudops' prediction log, owned by
# POSTGRES_USER. The image runs this once, when it initialises an empty data directory.
set -eu
for database in ${FRAUDOPS_DATABASES:-mlflow prefect fraudops}; do
    exists=$(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$database'")
    if [ "$exists" != 1 ]; then
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
            -c "CREATE DATABASE \"$database\" OWNER \"$POSTGRES_USER\""
    fi
done
