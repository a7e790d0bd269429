"""Fixtures for the command tests: the data tests' small local text corpus."""

from tests.data.conftest import text_dir  # noqa: F401  (a fixture, used by test_command_prepare)
