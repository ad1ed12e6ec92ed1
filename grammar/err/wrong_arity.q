k | where bin(produced_at) = now
