"""asgi.py as Channels' "Routing" docs write it, Django's handler made inside the router, with
`tracestream.configure()` added at its end.
"""

import os

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

application = ProtocolTypeRouter(
    {
        "http": get_asgi_application(),
        "websocket": URLRouter([]),
    }
)

import tracestream  # noqa: E402

tracestream.configure()
