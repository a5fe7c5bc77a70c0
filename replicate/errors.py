"""The one base class of every problem a user can fix: the CLIs print its message in one line, exit 2."""


class UserError(Exception):
    """Bad input (name, spec, data location, option): the message says what is wrong and how to fix it."""
