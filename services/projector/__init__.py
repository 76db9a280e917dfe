"""Projector: the Postgres read models of the event log, and `headrace rebuild`."""
