recon_result | since 7d | where producer_id = "recon.v2" and payload.outcome in ("fail", "timeout")
