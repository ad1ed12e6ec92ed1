k | extend ratio = payload.bytes / payload.rows, big = payload.rows > 1000 | select target, ratio as r, big, produced_at
