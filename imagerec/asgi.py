"""ASGI entry point: what docker-compose serves (gunicorn with uvicorn workers).

Under ASGI a long-polling client (``GET /api/v1/predictions/<id>/?wait=30``) waits on
an event, not on a thread, so hundreds of them cost no more than idle sockets and
never hold up an upload or a health probe.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagerec.settings")
application = get_asgi_application()
