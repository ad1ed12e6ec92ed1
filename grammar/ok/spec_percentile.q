ingestion_volume | stats percentile(payload.rows, 95) as p95 by bin(produced_at, 1d) as day
