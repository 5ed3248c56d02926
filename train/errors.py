"""The exception types that mean "the user asked for something that cannot be done".

Launchers turn them into one line on stderr and exit code 2 (see ``train.engine.launch.exit_on_usage_error``);
anything else is a bug and keeps its traceback.
"""


class UsageError(Exception):
    """Bad input: unknown name, missing or corrupt file, impossible combination of flags.

    Every rank of a job meets the same one, so only rank 0 reports it.
    """


class RankError(UsageError):
    """Bad input that only some ranks meet (a rank without a device): every rank that meets it reports it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, how schedulers end jobs: handled like Ctrl-C (the run is closed KILLED), but the process exits with
    143 (128 + 15), as a process killed by SIGTERM does, not Ctrl-C's 130."""


class RunFault(Exception):
    """Training itself went wrong (a non-finite loss): one line and exit code 1, the run closed FAILED."""
