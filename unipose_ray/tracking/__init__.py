"""MLflow: the runs a job logs, and one writer for a shared SQLite store."""
