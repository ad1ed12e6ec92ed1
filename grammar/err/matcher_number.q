k{table=1}
