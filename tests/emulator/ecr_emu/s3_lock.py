"""S3 Object Lock: retention that compliance mode does not let anyone weaken, and GetObjectRetention.

moto already refuses to delete a locked object version (`AccessDenied`), in
`DeleteObject` and `DeleteObjects`, and keeps an overwritten key's locked
version. It let `PutObjectRetention` shorten a COMPLIANCE retention or turn it
into GOVERNANCE, which the S3 user guide forbids ("In compliance mode … its
retention mode can't be changed, and its retention period can't be
shortened"), and it had no `GetObjectRetention` (the call returned the object's
bytes, which clients fail to parse). Both are fixed here.
"""
from __future__ import annotations

import datetime
from typing import Any

from moto.s3.exceptions import AccessDeniedByLock, MissingKey, MissingVersion, S3ClientError
from moto.s3.models import FakeKey, S3Backend
from moto.s3.responses import S3Response

_MOTO_PUT_OBJECT_RETENTION = S3Backend.put_object_retention
_MOTO_KEY_RESPONSE_GET = S3Response._key_response_get


class NoSuchObjectLockConfiguration(S3ClientError):
    def __init__(self) -> None:
        super().__init__("NoSuchObjectLockConfiguration", "The specified object does not have a ObjectLock configuration")


def _until(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)


def _compliance_locked(key: FakeKey) -> bool:
    until = _until(key.lock_until)
    return key.lock_mode == "COMPLIANCE" and until is not None and until > datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def put_object_retention(self: S3Backend, bucket_name: str, key_name: str, version_id: str | None,
                         retention: tuple[str | None, str | None]) -> None:
    """A version under COMPLIANCE retention keeps its mode, and its date can only move later."""
    key = self.get_object(bucket_name, key_name, version_id=version_id)
    if key is not None and _compliance_locked(key):
        mode, until = retention
        new_until = _until(until)
        if mode != "COMPLIANCE" or new_until is None or new_until < (_until(key.lock_until) or new_until):
            raise AccessDeniedByLock()
    _MOTO_PUT_OBJECT_RETENTION(self, bucket_name, key_name, version_id, retention)


def _retention_xml(key: FakeKey) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Mode>{key.lock_mode}</Mode><RetainUntilDate>{key.lock_until}</RetainUntilDate></Retention>"
    )


def get_object_retention(self: S3Response, query: dict[str, Any], key_name: str) -> Any:
    version_id = (query.get("versionId") or [None])[0] if isinstance(query.get("versionId"), list) else query.get("versionId")
    key = self.backend.get_object(self.bucket_name, key_name, version_id=version_id)
    if key is None:
        raise MissingVersion() if version_id else MissingKey(key=key_name)
    if not key.lock_mode or not key.lock_until:
        raise NoSuchObjectLockConfiguration()
    return 200, {"Content-Type": "application/xml"}, _retention_xml(key)


def _key_response_get(self: S3Response, query: dict[str, Any], key_name: str) -> Any:
    if "retention" in query:
        return get_object_retention(self, query, key_name)
    return _MOTO_KEY_RESPONSE_GET(self, query, key_name)


def install() -> None:
    S3Backend.put_object_retention = put_object_retention  # type: ignore[method-assign]
    S3Response._key_response_get = _key_response_get  # type: ignore[method-assign]
