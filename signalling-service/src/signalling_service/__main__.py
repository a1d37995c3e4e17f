"""``python -m signalling_service``: the signalling service alone, configured by the environment."""

from switchboard.runner import run_service

from signalling_service.settings import SignalSettings

if __name__ == "__main__":
    run_service(SignalSettings, "signalling_service.app:create_service")
