"""pytest plugin: chaos fixtures for users' own test suites (registered via ``pytest11``)."""
