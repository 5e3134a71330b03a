"""The build farm: Celery workers on hypervisor hosts pull build jobs from a Redis broker."""
