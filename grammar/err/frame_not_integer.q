k | window count() rows -1.5 .. 0
