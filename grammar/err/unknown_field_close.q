k | where produced_a > now
