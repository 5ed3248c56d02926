#!/usr/bin/env bash
# Start an MLflow tracking server for cnnbench runs.
#
#   mlflow/server.sh                                   # sqlite store ./mlflow.db, artifacts ./mlartifacts
#   BACKEND=$(DATA=pgdata mlflow/postgres.sh start) mlflow/server.sh   # a PostgreSQL store (password in a file)
#   HOST=0.0.0.0 PORT=5001 mlflow/server.sh             # listen beyond this machine (think before you do)
#   WORKERS=2 mlflow/server.sh                          # request-serving processes (MLflow's default: 4)
#
# Then train with --tracking-uri http://HOST:PORT (or export MLFLOW_TRACKING_URI).
set -euo pipefail
backend=${BACKEND:-sqlite:///mlflow.db}
artifacts=${ARTIFACTS:-./mlartifacts}
host=${HOST:-127.0.0.1}
port=${PORT:-5000}
workers=${WORKERS:-4}
mlflow=$(dirname "$0")/../.venv/bin/mlflow
[ -x "$mlflow" ] || mlflow=mlflow
exec "$mlflow" server --backend-store-uri "$backend" --artifacts-destination "$artifacts" \
  --serve-artifacts --host "$host" --port "$port" --workers "$workers"
