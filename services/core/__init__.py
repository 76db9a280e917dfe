"""Shared vocabulary of every Headrace service: envelope, subjects, bus, config, db, logging, errors."""
