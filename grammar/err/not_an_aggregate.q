k | stats payload.rows
