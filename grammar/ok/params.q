k{table=$table} | since $from | where payload.rows > $min_rows and $_x = 1 | limit $n
