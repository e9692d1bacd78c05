"""The command line: `linpath <verb>` (commands, with the instability and plane verbs in lmc) and the
warm start that lets a workflow's jobs skip the interpreter start-up (warm, warm_server). Empty on
purpose: `python -m linpath` imports only the warm-start client before it knows it needs the rest."""
