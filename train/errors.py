"""The one exception type that means "the user asked for something that cannot be done".

Launchers turn it into one line on stderr and exit code 2 (see ``train.cli.exit_on_usage_error``);
anything else is a bug and keeps its traceback.
"""


class UsageError(Exception):
    """Bad input: unknown name, missing or corrupt file, impossible combination of flags."""
