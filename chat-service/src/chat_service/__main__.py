"""``python -m chat_service``: the chat service alone, configured by the environment."""

from switchboard.runner import run_service

from chat_service.settings import ChatSettings

if __name__ == "__main__":
    run_service(ChatSettings, "chat_service.app:create_service")
