"""`python -m linpath …`, the workflow's jobs' command: hand it to a warm-start server first.

Why not `-m linpath.cli.commands`: the CLI imports argparse, yaml and the settings classes (about 0.1 CPU-s),
which a command that a warm-start server runs never uses; over a workflow's jobs that is CPU taken
from the jobs themselves. With no server set or answering, the command runs here as `linpath.cli.commands`."""

import sys

from .cli.warm import forward


def main() -> int:
    status = forward(sys.argv[1:])
    if status is not None:
        return status
    from .cli.commands import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
