k | where produced_at > now - 7d and produced_at < now + 1h and produced_at != now
