"""Built-in plugins. Each module here is an entry point of the ``sat_toolkit`` group."""
