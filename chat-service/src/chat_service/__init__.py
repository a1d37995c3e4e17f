"""Switchboard chat: unique nicknames, rooms, presence and history over socket.io."""
