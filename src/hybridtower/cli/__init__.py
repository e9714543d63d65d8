"""The ``hybridtower`` command line. Each subcommand lives in ``cli/commands/<name>.py``."""
