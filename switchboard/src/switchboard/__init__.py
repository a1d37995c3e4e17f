"""What every Switchboard service shares.

A service is a :class:`switchboard.service.Service` built from a settings object; nothing here
creates an app or reads the environment at import time, so tests build as many services as they
need with the settings they need.

One module a job: ``errors`` (what a client is refused with), ``namespace`` (the namespace base
and its refusals), ``components`` (what the lifespan owns), ``health`` (``/healthz``, ``/readyz``,
``/metrics``), ``redisclient`` (Redis pools), ``origins``, and ``service`` (the factory).
"""
