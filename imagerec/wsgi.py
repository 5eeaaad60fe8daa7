"""WSGI entry point (gunicorn imagerec.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagerec.settings")
application = get_wsgi_application()
