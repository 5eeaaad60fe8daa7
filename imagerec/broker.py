"""kombu's filesystem transport (the serverless broker of `make run`), with atomic writes.

kombu's own ``_put`` creates the message file and then writes it, while a consumer
moves any ``*.msg`` file it sees without taking the writer's lock: a worker polling at the
wrong moment reads an empty file and its consumer dies with a JSONDecodeError (seen here
under load). Writing to a temporary name and renaming it into place makes a message
visible only when complete. The folders are created on first connection.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The folders are made here, on first use, not when the settings are imported.
        for folder in {self.data_folder_in, self.data_folder_out, self.control_folder}:
            os.makedirs(folder, exist_ok=True)

    # Same signature as kombu's filesystem Channel._put, which already differs from the abstract
    # channel's (`payload` and **kwargs vs `message`); kombu's own stubs ignore that override too.
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        partial = os.path.join(self.data_folder_out, f"partial-{uuid.uuid4()}.tmp")  # never matches *.<queue>.msg
        try:
            with open(partial, "wb") as message_file:
                message_file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, os.path.join(self.data_folder_out, name))
        except OSError as error:
            raise ChannelError(f"Cannot add a message to {self.data_folder_out!r}: {error}") from error


class Transport(filesystem.Transport):
    Channel = Channel
