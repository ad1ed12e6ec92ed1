* {run_id="run-123"}
