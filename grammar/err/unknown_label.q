k{tabel="x"}
