"""The demo's Django project: a shop front that calls the inventory service."""
