#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys
from pathlib import Path


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagerec.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        database = settings.DATABASES["default"]
    except ImproperlyConfigured as error:
        # A malformed or missing setting is the operator's to fix: say which, no traceback.
        sys.stderr.write(f"imagerec is misconfigured: {error}\n")
        sys.exit(1)
    # The default SQLite database lives in VAR_DIR; settings never create directories
    # at import, so the command line makes this one before a command opens the file.
    if database["ENGINE"].endswith("sqlite3") and Path(database["NAME"]).parent == Path(settings.VAR_DIR):
        Path(settings.VAR_DIR).mkdir(parents=True, exist_ok=True)
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
