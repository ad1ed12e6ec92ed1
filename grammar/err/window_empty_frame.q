k | window count() as n rows 2 .. 1
