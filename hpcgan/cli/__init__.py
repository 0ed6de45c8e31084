"""Command-line entry points: `hpcgan SUBCOMMAND ...`."""
