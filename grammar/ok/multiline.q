recon_result
  | since 7d
  | where payload.outcome = "fail"
  | stats count()
