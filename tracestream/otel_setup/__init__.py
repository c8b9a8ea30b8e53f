"""Providers, resource, logging bridge and settings: everything `configure()` sets up."""
