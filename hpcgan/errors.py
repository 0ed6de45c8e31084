"""Errors a user can fix: reported as one line, exit code 2, on every rank."""


class UserError(Exception):
    """Bad input (config key, file, dataset, value). The message names it and says what was expected."""

    exit_code = 2
