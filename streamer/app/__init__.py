"""The application: a Session runs source -> ring -> worker -> recognizer -> sinks over a loaded model;
streamer.app.run holds the flows the command line dispatches to."""

from streamer.app.session import Session, SessionOptions

__all__ = ["Session", "SessionOptions"]
