recon_result | window countif(payload.outcome = "timeout") as streak by target rows -2 .. 0 | where streak = 3 | latest by target
