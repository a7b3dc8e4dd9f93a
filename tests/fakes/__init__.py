"""Fake upstream providers that speak real wire formats over loopback HTTP, for end-to-end tests."""
