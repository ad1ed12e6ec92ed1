k | since 2024-13-01
