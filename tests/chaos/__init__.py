"""Chaos runs: every process SIGKILLed in turn under load; nothing lost, nothing doubled."""
