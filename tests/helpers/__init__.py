"""Helpers shared by the tests: the demo fleet, a pool in a thread, hive writer."""
