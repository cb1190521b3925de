"""A Django project for the integration tests: the demo project's settings,
plus test-only tasks (that record which process ran them) and switches,
read from the environment, for the settings variants under test."""
