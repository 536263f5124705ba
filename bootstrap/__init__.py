"""The `ileices` command line, configuration, setup and dashboard. The top layer."""
