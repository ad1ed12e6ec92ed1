k{table=~"[z-a]"}
