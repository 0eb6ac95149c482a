"""Fakes that speak real wire formats, for tests of the clients that talk to them."""
