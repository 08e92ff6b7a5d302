//! End-to-end tests live under tests/e2e and tests/python.
