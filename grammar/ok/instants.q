k | where produced_at >= 2024-01-10T07:00:00+02:00 and produced_at < 2024-01-10T05:00:00.123456Z and produced_at != 2024-02-29
