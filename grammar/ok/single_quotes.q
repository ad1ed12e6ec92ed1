k{table='its'} | where payload.name = 'say "hi"' and x = 'it\'s'
