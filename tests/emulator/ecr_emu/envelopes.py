"""Where managed signing gets its Notary Project envelopes: the test signing library in `tests/signing/`.

The emulator and the tests sign with one library (`tests/signing/notation.py`,
written with `cryptography`, `jwcrypto` and `pycose`), independent of the
Rust verifier. That library is a directory of plain modules (`notation`
imports `pki`), not a package: this module puts `tests/signing/` on the
import path and forwards `sign_jws` and `sign_cose` to it, importing it on
first use so that the emulator starts (and everything but managed signing
works) without it.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

SIGNING_LIBRARY = Path(__file__).resolve().parents[2] / "signing"


def _library() -> ModuleType:
    if str(SIGNING_LIBRARY) not in sys.path:
        sys.path.append(str(SIGNING_LIBRARY))
    return importlib.import_module("notation")


def sign_jws(*args: Any, **kwargs: Any) -> bytes:
    return bytes(_library().sign_jws(*args, **kwargs))


def sign_cose(*args: Any, **kwargs: Any) -> bytes:
    return bytes(_library().sign_cose(*args, **kwargs))
