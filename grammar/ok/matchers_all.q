k{source="a", schema!="b", table=~"c.*", target!~"d", producer=$p, run_id="r", job_id="j", namespace="n", tenant="t"}
