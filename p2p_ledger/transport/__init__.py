"""Transports: how frames move between nodes (websockets here; the simulator has its own)."""
