recon_result{table="srv_cfsver_ct_main"} | since 30d | where payload.outcome = "fail" | stats count() as failures by target, bin(produced_at, 1d) as day
