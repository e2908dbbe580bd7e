"""The teacher-logit cache: Parquet shards of teacher targets, built once, read by every run."""
