k | sort payload.rows desc, produced_at asc, id | limit 5
