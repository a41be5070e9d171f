"""AWS errors raised by the extension.

moto serialises a `ServiceException` with the shape of the same name in the
calling service's botocore model (status code, `__type` or `x-amzn-ErrorType`).
It also looks up a second model named after the module that defined the
exception class, which must therefore live outside the `moto` package.
"""
from __future__ import annotations

from moto.core.exceptions import ServiceException


class AwsError(ServiceException):
    """`AwsError("ErrorCode", "message")`, serialised as that service error."""
