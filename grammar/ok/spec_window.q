ingestion_volume | window avg(payload.rows) as mean7, stddev(payload.rows) as sd7 by target rows -7 .. -1 | where payload.rows > mean7 + 3 * sd7
