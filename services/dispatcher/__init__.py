"""Dispatcher: every decision about a job (accept, route, retry, dead-letter, schedules)."""
