k | WHERE Payload.Rows > 0 AND NOT exists(payload.x) OR TRUE | SORT produced_at DESC | LIMIT 10 | STATS COUNT() AS n, Avg(x) BY target
