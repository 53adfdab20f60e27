"""Helpers shared by the tests: the demo fleet, a pool in a thread, image makers,
a hive writer, a real server."""
