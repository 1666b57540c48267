#!/usr/bin/env bash
# Set up (if needed) and run the main job: live captions in the terminal.
# With no arguments it needs no microphone and no model hub: the bundled demo model captions the bundled
# demo speech, replayed in real time as if it came from a microphone. Any streamer options may follow,
# e.g.  scripts/demo.sh --model facebook/wav2vec2-base-960h   (microphone, default hub model)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -eq 0 ]; then
  set -- --model demo --file assets/demo_clips/demo_session.wav --replay realtime
fi
exec .venv/bin/streamer "$@"
