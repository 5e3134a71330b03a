"""Helpers the tests share: stand-in servers, fakes and builders of test data."""
