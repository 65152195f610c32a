"""Long-lived Ray actors: ingest+features per symbol group, risk/execution, supervisor."""
