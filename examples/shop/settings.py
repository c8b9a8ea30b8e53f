"""Settings for the demo shop (port 8000). Not for production: no secrets, loopback only."""

from __future__ import annotations

import os
import tempfile

SECRET_KEY = "demo-only-not-a-secret"  # the demo binds to loopback only
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "shop.urls"
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    # configure() from settings.TRACESTREAM (env fills the rest), before the handler is built
    "tracestream.integrations.django.TracestreamConfig",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DB", os.path.join(tempfile.gettempdir(), "tracestream-shop.sqlite3")),
    }
}
TRACESTREAM = {"service_name": "shop-web"}
INVENTORY_URL = os.environ.get("INVENTORY_URL", "http://127.0.0.1:8001")
