k | stats percentile(payload.rows)
