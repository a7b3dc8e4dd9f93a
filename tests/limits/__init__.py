"""Tests of lockgate.limits."""
