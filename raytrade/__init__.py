"""Composition root: CLI, settings loading and wiring of the running system."""
