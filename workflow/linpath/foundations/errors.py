"""The error every settings check raises: the bottom of the package, so any module can raise it."""


class SettingsError(ValueError):
    """A setting is missing, unknown or of the wrong type/value; the message names its dotted key."""
