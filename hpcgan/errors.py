"""Errors a user can fix: reported as one line, exit code 2, on every rank."""
from __future__ import annotations


class UserError(Exception):
    """Bad input (config key, file, dataset, value). The message names it and says what was expected."""

    exit_code = 2


class AgreedError(UserError):
    """A UserError every rank has learned of together: in one collective (Backend.agree), or decided from
    inputs every rank shares (a plan from agreed dataset sizes, gathered fingerprints, a broadcast checkpoint).

    Nobody is left waiting in a collective, so the job ends cleanly: rank 0 prints
    `lines` (one per distinct message), every rank shuts its backend down and exits 2.
    """

    def __init__(self, lines: list[str]):
        super().__init__("; ".join(lines))
        self.lines = list(lines)
