k | where count() > 1
