"""The compute service: one per host, owning the guests on it."""
