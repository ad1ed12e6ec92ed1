recon_result | since 30d | stats countif(payload.outcome = "fail") as failures, count() as checks by target
