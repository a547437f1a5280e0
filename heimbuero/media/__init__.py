"""The media plane: the RTP relay (relay*) and the media applications that play and record
audio themselves (ua*, voicemail)."""
