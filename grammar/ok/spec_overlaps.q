ingestion_volume | overlaps 2024-01-01 .. 2024-02-01 | where payload.rows > 0
