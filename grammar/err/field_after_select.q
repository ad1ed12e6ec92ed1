k | select target | where payload.rows > 0
