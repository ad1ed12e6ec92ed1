ingestion_volume , recon_result,schema_snapshot
