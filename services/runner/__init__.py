"""Runner: executes one attempt of a job (Ductile protocol-2 subprocess or in-process Python plugin)."""
