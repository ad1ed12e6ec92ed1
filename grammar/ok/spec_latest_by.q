schema_snapshot{source=~"pg_.*"} | latest by target | select target, len(payload.columns) as columns
