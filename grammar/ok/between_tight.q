k | between 2024-01-01..2024-02-01 | between now-7d..now
