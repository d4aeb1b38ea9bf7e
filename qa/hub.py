"""Failing fast when the Hugging Face hub cannot be reached.

Without a network the hub libraries retry for 30-50 s before giving up. One
connection attempt (3 s at most) tells the same: when it fails, this process
switches the libraries to offline mode, so a model or dataset in the local cache
still loads at once and anything else fails at once with our one-line error.
"""

from __future__ import annotations

import os
import socket
import sys
from functools import cache
from urllib.parse import urlparse

PROBE_SECONDS = 3.0
_TRUE = ("1", "true", "yes", "on")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


@cache
def hub_unreachable() -> str | None:
    """None when the hub answers (or offline mode was asked for); else why it cannot be reached."""
    if offline():
        return None
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=PROBE_SECONDS).close()
        return None
    except OSError as error:
        reason = f"{endpoint.hostname}:{port}: {error.strerror or error}"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    for module_name in ("huggingface_hub.constants", "datasets.config"):
        module = sys.modules.get(module_name)
        for attribute in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            if module is not None and hasattr(module, attribute):
                setattr(module, attribute, True)
    return reason


def unreachable_note() -> str:
    """' (the hub is unreachable: ...)' when the probe failed, for error messages."""
    reason = hub_unreachable()
    return f"; the hub is unreachable ({reason})" if reason else ""
