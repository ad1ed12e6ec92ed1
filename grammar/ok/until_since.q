k | since 2024-01-01 | until 2024-02-01T00:00:00Z | since now - 2w
