"""``python -m ticker_service``: the ticker service alone, configured by the environment."""

from switchboard.runner import run_service

from ticker_service.settings import TickerSettings

if __name__ == "__main__":
    run_service(TickerSettings, "ticker_service.app:create_service")
