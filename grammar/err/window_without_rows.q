k | window count() by target
