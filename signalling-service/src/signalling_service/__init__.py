"""Switchboard signalling: WebRTC offers, answers and candidates relayed between peers."""
