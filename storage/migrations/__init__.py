"""Alembic migrations of the raytrade schema."""
