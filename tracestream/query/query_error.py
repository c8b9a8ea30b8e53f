"""The one error a query raises for input no query can use."""


class QueryError(ValueError):
    """A filter has a value no query can use; the message names it."""
