"""Test support: real nats-server and Postgres fixtures, an in-process stack, HTTP helpers."""
