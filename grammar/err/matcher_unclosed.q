k{table="x"
