"""streamer: real-time speech recognition with wav2vec2 CTC models, stitched exactly on the frame grid."""

__version__ = "0.1.0"
