ingestion_volume{table="srv_cfsver_ct_main"} | since 30d
