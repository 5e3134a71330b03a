"""The Celery application of the farm, configured for builds that take minutes to hours.

- late acknowledgement, one message a slot (prefetch 1): a job is acknowledged only after
  its artifact is stored, so a worker that dies mid-build leaves it to be delivered again;
- reject on worker loss: a pool process killed mid-build puts its job back at once;
- the Redis visibility timeout above the longest build (6 h by default), or a message still
  being built would be handed to a second worker; a job a dead worker held comes back after
  it (BAKER_FARM_VISIBILITY_S lowers it, as the tests do, to see that happen in seconds).
"""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-untyped]

VISIBILITY_S = 6 * 3600


def make_app(broker: str, backend: str | None = None) -> Celery:
    """The app on `broker`; results are kept on the broker too unless `backend` says where."""
    visibility = int(os.environ.get("BAKER_FARM_VISIBILITY_S", VISIBILITY_S))
    app = Celery("baker", broker=broker, backend=backend or broker, include=["baker.farm.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": visibility,
            # Sweep for jobs a dead worker held as often as the timeout allows.
            "unacked_restore_interval": max(1, min(10, visibility // 10)),
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={"visibility_timeout": visibility},
    )
    return app
