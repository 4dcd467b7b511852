"""Turning records into the compute API's response bodies, per microversion."""
