"""The media plane: the RTP relay (relay*) and the media applications."""
