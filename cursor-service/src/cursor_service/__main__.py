"""``python -m cursor_service``: the cursor service alone, configured by the environment."""

from switchboard.runner import run_service

from cursor_service.settings import CursorSettings

if __name__ == "__main__":
    run_service(CursorSettings, "cursor_service.app:create_service")
