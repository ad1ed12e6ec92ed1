k | stats count() by target, kind, bin(produced_at, 1d) as day
