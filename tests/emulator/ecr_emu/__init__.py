"""An extension of the moto server that makes ECR behave like AWS for ecr-audit.

moto covers SQS, EventBridge routing and ECR repository settings well but not
what ecr-audit audits: real digests, referrers, managed signing, scans,
Inspector coverage, Signer revocation and the events ECR emits. `create_app()`
patches those into moto (in this process only) and returns moto's WSGI
application wrapped in the extension's middleware. See docs/EMULATOR.md.
"""
from __future__ import annotations

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from . import (
    assume_role,
    blobs,
    control,
    ecr,
    ecr_public,
    ecs_revisions,
    events,
    in_use,
    inspector,
    kms,
    kms_signing,
    lifecycle,
    notary,
    pulls,
    replication,
    s3_lock,
    signer,
    signer_revocation,
    sqs,
)
from .counters import COUNTER
from .faults import FAULTS
from .middleware import OWN_SERVICES, EmulatorMiddleware
from .state import STORE

_installed = False


def install() -> None:
    """Patches moto once per process."""
    global _installed
    if _installed:
        return
    ecr.install()
    kms.install()
    signer.install()
    signer_revocation.install()
    notary.install()
    blobs.install()
    inspector.install()
    events.install()
    ecs_revisions.install()
    sqs.install()
    # After ecr/inspector: these wrap what those installed.
    pulls.install()
    replication.install()
    in_use.install()
    kms_signing.install()
    s3_lock.install()
    ecr_public.install()
    OWN_SERVICES["ecr-public"] = ecr_public.handle
    control.ROUTES.update({**pulls.ROUTES, **lifecycle.ROUTES, **in_use.ROUTES, **assume_role.ROUTES})
    STORE.on_reset(COUNTER.clear)
    STORE.on_reset(assume_role.clear)
    STORE.on_reset(FAULTS.clear)
    STORE.on_reset(events.RECENT.clear)
    _installed = True


def create_app() -> EmulatorMiddleware:
    install()
    return EmulatorMiddleware(DomainDispatcherApplication(create_backend_app))
