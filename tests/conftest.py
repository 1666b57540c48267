import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# Tests never read a developer's own ~/.config/streamer/config.toml (in-process and in subprocesses).
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="streamer-test-config-")
