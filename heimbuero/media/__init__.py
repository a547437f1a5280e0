"""The media plane: audio the server relays or plays and records itself."""
