"""Test helpers that are not fixtures (image makers)."""
