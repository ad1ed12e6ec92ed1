k | where x = (now) - 7d or y = now - 7d - 1d
