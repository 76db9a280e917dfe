"""Headrace benchmarks, each measured side by side with its baseline in the same run.

`python -m bench` (or `make bench`) starts its own nats-server and a fresh Postgres
database, runs every measurement, prints one table and cleans everything up. See
bench/README.md for what each row means.
"""
