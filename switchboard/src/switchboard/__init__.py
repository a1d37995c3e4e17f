"""What every Switchboard service shares.

A service is built by :func:`switchboard.service.build_service` from a settings object; nothing
here creates an app or reads the environment at import time, so tests build as many services as
they need with the settings they need.
"""
