k | stats percentile(payload.rows, 101)
