"""``aiflows.utils``: serving, users, futures, helpers and logging (see each module)."""
