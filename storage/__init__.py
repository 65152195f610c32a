"""Database schema and migrations, batched writer, parquet lake, event bus, MLflow access."""
