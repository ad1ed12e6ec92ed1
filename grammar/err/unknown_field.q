ingestion_volume | where rows > 0
