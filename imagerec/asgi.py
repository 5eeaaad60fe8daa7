"""ASGI entry point: what ``make run`` and docker-compose serve (gunicorn with uvicorn
workers, ``imagerec/gunicorn.py``).

Under ASGI a long-polling client (``GET /api/v1/predictions/<id>/?wait=30``) waits on
an event, not on a thread, so hundreds of them cost no more than idle sockets and
never hold up an upload or a health probe. A body over ``MAX_REQUEST_BYTES`` is refused
before Django reads it (``imagerec.request_limits``). The happy path of one-image
submit and poll is answered in front of Django (``predictions.api.fastpath``;
``API_FAST_PATH=off`` sends everything through Django).
"""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

from imagerec.request_limits import RequestBodyLimit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagerec.settings")
django_application = get_asgi_application()

from predictions.api.fastpath import FastPath  # noqa: E402 - imports models: after Django is set up

application = RequestBodyLimit(FastPath(django_application), max_bytes=settings.MAX_REQUEST_BYTES)
