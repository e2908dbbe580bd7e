"""The process and Ray runtime: ranks, output filtering, signals, Ray's internals."""
