k | limit -1
