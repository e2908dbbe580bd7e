"""Data: readers, generated data, unified records, the top-down crop pipeline."""
