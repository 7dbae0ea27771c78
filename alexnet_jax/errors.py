"""The one exception type that means "the user asked for something we cannot do".

`main` prints its message as a single paragraph and exits with status 2, with no traceback: the
message itself must say what was wrong and what to do. Anything else is a bug and keeps its
traceback.
"""


class ConfigError(ValueError):
  """A bad config field, dataset, device layout or workdir, with a message naming the fix."""
