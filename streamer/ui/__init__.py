"""Rich live captions: state (updated from events), a pure view (snapshot -> renderable), and the app (terminal,
keys, refresh)."""

from streamer.ui.app import CaptionUI

__all__ = ["CaptionUI"]
