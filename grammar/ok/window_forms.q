k | window count() rows 0 .. 0 | window sum(payload.rows) as s, first(payload.rows) by target, kind rows -3 .. 2
