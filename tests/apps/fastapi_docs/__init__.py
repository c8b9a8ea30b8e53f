"""FastAPI's "Bigger Applications - Multiple Files" tutorial app, as the docs lay it out.

Served by uvicorn, gunicorn (`UvicornWorker`) and hypercorn in tests/test_servers.py.
"""
