"""MLflow: the runs a job logs, their params and tracking URIs, and one writer for a shared
SQLite store."""

import os

# Set before any module of the package imports MLflow. MLflow's usage telemetry thread adds
# and removes a variable of os.environ while requests iterates it for proxies; a sweep
# trial's log-batch failed on it (KeyError '_MLFLOW_TELEMETRY_SESSION_ID'). Off unless the
# user chose otherwise; Ray workers inherit it.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Not two "View run ... at http://..." lines per finished run (a sweep ends dozens); the jobs
# say where their runs are.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
