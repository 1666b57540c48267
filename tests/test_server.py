"""`streamer serve`: the Wyoming and vosk-compatible WebSocket servers with real clients over real TCP on
127.0.0.1 (wyoming's own AsyncTcpClient; a websockets client following the vosk protocol), the shared model
(one view per stream), the push source, the limits. Tests that load a model are slow."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from streamer.audio.push import PushSource, pcm_to_float
from streamer.audio.resample import StreamingResampler
from streamer.audio.ringbuffer import RingBuffer
from streamer.core.config import Config
from streamer.model.inference import FairLock

from desktop_fixtures import streamer_env
from helpers import wait_for

pytest.importorskip("wyoming")
pytest.importorskip("websockets")

from streamer.server.common import Limits, parse_endpoint  # noqa: E402
from streamer.server.vosk import result_message  # noqa: E402
from streamer.server.wyoming import ProtocolError, TranscriptChunks, read_event  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO / "assets" / "demo_clips"
TIMEOUT_S = 60.0


# -- the push source ------------------------------------------------------------------------------------------

def _pcm(x: np.ndarray, width: int) -> bytes:
    """float [-1, 1) -> little-endian PCM of `width` bytes (interleaved when 2-D)."""
    flat = np.asarray(x, np.float64).reshape(-1)
    if width == 1:
        return (np.clip(np.round(flat * 128 + 128), 0, 255)).astype(np.uint8).tobytes()
    if width == 2:
        return np.clip(np.round(flat * 32768), -32768, 32767).astype("<i2").tobytes()
    if width == 3:
        v = np.clip(np.round(flat * (1 << 23)), -(1 << 23), (1 << 23) - 1).astype(np.int64) & 0xFFFFFF
        return np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], axis=1).astype(np.uint8).tobytes()
    return np.clip(np.round(flat * (1 << 31)), -(1 << 31), (1 << 31) - 1).astype("<i4").tobytes()


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_pcm_of_every_width_decodes_to_the_same_samples(width):
    x = np.sin(np.linspace(0, 20, 400)).reshape(200, 2) * 0.5
    back = pcm_to_float(_pcm(x, width), width, 2)
    assert back.shape == (200, 2)
    assert np.max(np.abs(back - x)) < (2.0 / 2 ** (8 * width)) + 1e-6


def test_push_source_resamples_any_format_like_one_shot_and_keeps_split_frames():
    rng = np.random.default_rng(0)
    stereo = (rng.normal(0, 0.1, (44100, 2))).astype(np.float32)
    data = _pcm(stereo, 2)
    ring = RingBuffer(16000 * 10)
    source = PushSource(ring, threading.Event(), 44100, 2, 2)
    for i in range(0, len(data), 1001):  # odd sizes: frames split across pushes
        source.push(data[i:i + 1001])
    source.finish()
    got = ring.read().samples
    expected = StreamingResampler(44100, 16000)
    want = np.concatenate([expected.process(pcm_to_float(data, 2, 2)), expected.flush()])
    assert ring.closed
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert source.push(data) == 0  # after finish nothing more is taken


def test_push_source_refuses_formats_no_client_means():
    ring = RingBuffer(16000 * 5)
    for rate, width, channels in [(0, 2, 1), (16000, 5, 1), (16000, 2, 0), (10**7, 2, 1), ("16000", 2, 1)]:
        with pytest.raises(ValueError):
            PushSource(ring, threading.Event(), rate, width, channels)


# -- the shared model's lock and the protocol pieces ---------------------------------------------------------

def test_fair_lock_serves_waiters_in_order():
    lock = FairLock()
    order: list[int] = []
    lock.acquire()
    threads = []
    for i in range(5):
        t = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        t.start()
        threads.append(t)
        wait_for(lambda n=i + 1: len(lock._queue) == n, "waiter queued", 5)
    lock.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]


def test_transcript_chunks_concatenate_to_the_transcript():
    c = TranscriptChunks()
    pieces = [c.committed("HELLO WOR"), c.committed("HELLO WORLD AN"), c.final("HELLO WORLD AND MORE"),
              c.committed("SECOND ON"), c.final("SECOND ONE")]
    assert "".join(p for p in pieces if p) == "HELLO WORLD AND MORE SECOND ONE" == c.text
    d = TranscriptChunks()
    d.committed("HALLO THERE X")
    assert d.final("HELLO THERE") is None and d.diverged and d.text == "HELLO THERE"


def test_vosk_result_carries_word_times():
    from streamer.core.events import FinalEvent, Word

    f = FinalEvent(1.0, 0.0, 0, "HI THERE", (Word("HI", 0.1, 0.2), Word("THERE", 0.3, 0.61234)), 0.1, 0.61)
    assert result_message([f], True) == {"result": [{"conf": 1.0, "end": 0.2, "start": 0.1, "word": "HI"},
                                                    {"conf": 1.0, "end": 0.612, "start": 0.3, "word": "THERE"}],
                                         "text": "HI THERE"}
    assert result_message([], True) == {"result": [], "text": ""}
    assert result_message([f], False) == {"text": "HI THERE"}


def test_endpoints_parse_and_bad_ones_are_one_line_errors():
    from streamer.errors import ConfigError

    assert parse_endpoint("tcp://0.0.0.0:10300", "tcp", "--wyoming") == ("0.0.0.0", 10300)
    assert parse_endpoint("ws://:2700", "ws", "--websocket") == ("127.0.0.1", 2700)
    for bad in ("tcp://host", "ws://h:1", "tcp://h:99999"):
        with pytest.raises(ConfigError):
            parse_endpoint(bad, "tcp", "--wyoming")
    with pytest.raises(ConfigError):
        Limits(max_sessions=0).validate()


def _reader(data: bytes) -> asyncio.StreamReader:
    r = asyncio.StreamReader(limit=64 * 1024)
    r.feed_data(data)
    r.feed_eof()
    return r


def test_wyoming_reader_checks_sizes_before_reading_and_refuses_malformed_events():
    async def go():
        ok = await read_event(_reader(b'{"type": "audio-chunk", "data": {"rate": 16000}, "payload_length": 4}\nabcd'), 100)
        assert ok is not None and ok.type == "audio-chunk" and ok.payload == b"abcd" and ok.data["rate"] == 16000
        assert await read_event(_reader(b""), 100) is None
        for bad in [b"not json\n", b'{"type": 1}\n', b'{"type": "x", "payload_length": 1000000}\n',
                    b'{"type": "x", "data_length": 5}\n[1,2]', b'{"type": "x", "payload_length": 9}\nabc',
                    b'{"type": "x", "data_length": -1}\n', b'{"type": "x"}']:
            with pytest.raises(ProtocolError):
                await read_event(_reader(bad), 1000)
    asyncio.run(go())


# -- the shared model: streams never see each other's cached features ----------------------------------------

@pytest.mark.slow
def test_interleaved_streams_on_one_layer_norm_model_decode_as_each_alone(tmp_path):
    """Two streams over one CTCModel with feature reuse ("local", layer-norm encoder), their windows
    interleaved one by one from two threads: each stream's finals equal that stream decoded alone."""
    from streamer.core.config import ModelConfig, VadConfig, WindowConfig
    from streamer.core.events import AudioChunk, FinalEvent
    from streamer.core.recognizer import Recognizer
    from streamer.core.vad import VadSegmenter
    from streamer.model.loading import load_model

    from helpers import energy_speech, make_tiny_ctc_folder, utterances

    SHARE = lambda m: m.view()  # noqa: N806
    folder = make_tiny_ctc_folder(tmp_path / "large", "large")
    model = load_model(ModelConfig(name=str(folder), quantize=False))
    assert model.reuse_mode == "local"
    # Finals from the stitched windows (the one-pass final would not use the cached features).
    config = Config(vad=VadConfig(confirm="off"), window=WindowConfig(final_pass_max_s=0))
    clips = [utterances(1, 2), utterances(2, 2)]

    class Recorded:
        """The view, keeping every window's logits."""

        def __init__(self, view):
            self.view, self.geometry, self.vocabulary, self.calls = view, view.geometry, view.vocabulary, []

        def logits(self, audio, start_sample=None):
            out = self.view.logits(audio, start_sample)
            self.calls.append(out)
            return out

    def recognizer(view):
        return Recognizer(view, config, vad=VadSegmenter(config.vad, classifier=energy_speech))

    def alone(audio):
        view = Recorded(SHARE(model))
        r = recognizer(view)
        events = r.feed(AudioChunk(0, audio, 16000)) + r.finish()
        return [e.text for e in events if isinstance(e, FinalEvent)], view.calls

    expected = [alone(a) for a in clips]
    assert all(texts for texts, _ in expected)

    # Interleave: each stream feeds 100 ms at a time, the two taking strict turns.
    turns = [threading.Semaphore(1), threading.Semaphore(0)]
    got: list = [None, None]
    reused = [0, 0]

    def run(i):
        view = Recorded(SHARE(model))
        r = recognizer(view)
        audio, texts = clips[i], []
        n = max(len(c) for c in clips)
        for start in range(0, n + 1600, 1600):
            turns[i].acquire()
            try:
                if start < len(audio):
                    texts += [e.text for e in r.feed(AudioChunk(start, audio[start:start + 1600], 16000))
                              if isinstance(e, FinalEvent)]
            finally:
                turns[1 - i].release()
        texts += [e.text for e in r.finish() if isinstance(e, FinalEvent)]
        got[i] = (texts, view.calls)
        reused[i] = view.view.counters.frames_reused

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for (texts, calls), (want_texts, want_calls) in zip(got, expected):
        assert texts == want_texts
        assert len(calls) == len(want_calls)
        for a, b in zip(calls, want_calls):
            np.testing.assert_allclose(a, b, atol=1e-4)
    assert all(reused), "feature reuse was not exercised"


# -- the servers, with real clients ---------------------------------------------------------------------------

def clip(name: str) -> tuple[np.ndarray, str]:
    import soundfile as sf

    audio, rate = sf.read(str(CLIPS / name), dtype="float32")
    assert rate == 16000
    return np.ascontiguousarray(audio), name


def clip_names() -> list[str]:
    return [line.split("\t")[0] for line in (CLIPS / "references.tsv").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def demo():
    pytest.importorskip("torch")
    from streamer.model.loading import load_model

    from desktop_fixtures import demo_model_or_skip

    demo_model_or_skip()
    return load_model("demo")


def offline(model, audio: np.ndarray) -> str:
    from streamer.model.reference import reference_text

    return " ".join(reference_text(model.model, model.processor, audio).split())


def alone(model, audio: np.ndarray, final_rescorer=None) -> str:
    """The same core over the same audio, no server: one Recognizer fed 100 ms chunks."""
    from streamer.core.events import AudioChunk, FinalEvent
    from streamer.core.recognizer import Recognizer

    r = Recognizer(model.view(), Config(), final_rescorer=final_rescorer)
    events = [e for i in range(0, len(audio), 1600) for e in r.feed(AudioChunk(i, audio[i:i + 1600], 16000))]
    return " ".join(e.text for e in events + r.finish() if isinstance(e, FinalEvent) and e.text)


def near(a: str, b: str) -> bool:
    """Same words but at most one (the streamed final's pass starts at the utterance, the offline decode at
    the recording: on demo3 one letter differs)."""
    x, y = a.split(), b.split()
    return len(x) == len(y) and sum(p != q for p, q in zip(x, y)) <= 1


class ServerThread:
    """A Server on its own event loop thread, on free ports of 127.0.0.1."""

    def __init__(self, model, limits: Limits | None = None) -> None:
        from streamer.server import Server

        self.loop = asyncio.new_event_loop()
        self.server = Server(model, Config(), limits or Limits(max_sessions=8, idle_timeout_s=30),
                             wyoming=("127.0.0.1", 0), websocket=("127.0.0.1", 0))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.wyoming = self.server.ports["wyoming"]
        self.websocket = self.server.ports["websocket"]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture(scope="module")
def server(demo):
    with ServerThread(demo) as s:
        yield s


def pcm16(audio: np.ndarray) -> bytes:
    return _pcm(audio, 2)


async def pace(t0: float, seconds: float, realtime: bool) -> None:
    if realtime:
        delay = t0 + seconds - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def wyoming_transcribe(port: int, data: bytes, rate: int = 16000, width: int = 2, channels: int = 1,
                             realtime: bool = False, token: str | None = None, chunk_s: float = 0.1) -> dict:
    """Home-Assistant style: transcribe, audio-start, audio-chunk..., audio-stop; read up to transcript-stop."""
    from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStop
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient

    out: dict = {"chunks": [], "types": []}
    async with AsyncTcpClient("127.0.0.1", port, connect_timeout=10, read_timeout=TIMEOUT_S) as client:
        first = Transcribe(language="en").event()
        if token is not None:
            first.data["token"] = token
        await client.write_event(first)
        await client.write_event(AudioStart(rate, width, channels).event())
        step = int(rate * chunk_s) * width * channels
        t0 = time.monotonic()
        for i in range(0, len(data), step):
            await client.write_event(AudioChunk(rate, width, channels, data[i:i + step]).event())
            await pace(t0, (i + step) / (rate * width * channels), realtime)
        await client.write_event(AudioStop().event())
        while True:
            event = await client.read_event()
            assert event is not None, "connection closed before transcript-stop"
            out["types"].append(event.type)
            if event.type == "error":
                out["error"] = event.data
                return out
            if TranscriptChunk.is_type(event.type):
                out["chunks"].append(TranscriptChunk.from_event(event).text)
            if Transcript.is_type(event.type):
                out["text"] = Transcript.from_event(event).text
            if TranscriptStop.is_type(event.type):
                return out


async def vosk_transcribe(port: int, data: bytes, rate: int = 16000, realtime: bool = False, chunk_bytes: int = 8000,
                          query: str = "", stop_after: int | None = None) -> dict:
    """A vosk client (alphacep's test.py, with a config message): one reply per binary message, eof, close."""
    import websockets

    out: dict = {"partials": [], "finals": []}
    async with websockets.connect(f"ws://127.0.0.1:{port}{query}", open_timeout=10) as ws:
        await ws.send(json.dumps({"config": {"sample_rate": rate}}))
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(data), chunk_bytes)):
            if stop_after is not None and n >= stop_after:
                return out
            await ws.send(data[i:i + chunk_bytes])
            reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
            (out["partials"] if "partial" in reply else out["finals"]).append(reply)
            await pace(t0, (i + chunk_bytes) / (2 * rate), realtime)
        await ws.send('{"eof" : 1}')
        out["last"] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT_S)
        out["close"] = ws.close_code
    out["text"] = " ".join(m["text"] for m in out["finals"] + [out["last"]] if m["text"])
    return out


@pytest.mark.slow
def test_wyoming_describe_gives_the_model_and_its_language(server, demo):
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe, Info

    async def go():
        async with AsyncTcpClient("127.0.0.1", server.wyoming, read_timeout=TIMEOUT_S) as client:
            await client.write_event(Describe().event())
            return Info.from_event(await client.read_event())

    info = asyncio.run(go())
    (program,) = info.asr
    assert program.models[0].name == demo.name and program.models[0].languages == ["en"]
    assert program.supports_transcript_streaming


@pytest.mark.slow
def test_wyoming_transcribes_a_clip_in_any_format_as_the_offline_decode(server, demo):
    """44.1 kHz stereo 24-bit in; the transcript equals the offline decode of what the server hears (the
    same audio resampled to 16 kHz mono), and the transcript chunks add up to it."""
    import soxr

    audio, _ = clip(clip_names()[0])
    up = soxr.resample(audio, 16000, 44100).astype(np.float32) * 0.9
    stereo = np.stack([up, up], axis=1)
    heard = StreamingResampler(44100, 16000)
    heard_audio = np.concatenate([heard.process(pcm_to_float(_pcm(stereo, 3), 3, 2)), heard.flush()])
    out = asyncio.run(wyoming_transcribe(server.wyoming, _pcm(stereo, 3), rate=44100, width=3, channels=2))
    assert "error" not in out, out
    assert out["text"] == offline(demo, heard_audio) != ""
    assert out["types"][0] == "transcript-start" and out["types"][-2:] == ["transcript", "transcript-stop"]
    assert "".join(out["chunks"]) == out["text"]


@pytest.mark.slow
def test_vosk_client_gets_partials_finals_with_word_times_and_a_close(server, demo):
    audio, _ = clip(clip_names()[1])
    out = asyncio.run(vosk_transcribe(server.websocket, pcm16(audio)))
    assert out["text"] == offline(demo, audio) != ""
    assert out["close"] == 1000
    assert len(out["partials"]) + len(out["finals"]) == -(-len(audio) * 2 // 8000)  # one reply per message
    words = [w for m in out["finals"] + [out["last"]] for w in m.get("result", [])]
    assert [w["word"] for w in words] == out["text"].split()
    assert all(0 <= w["start"] <= w["end"] <= len(audio) / 16000 + 0.1 and w["conf"] == 1.0 for w in words)
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)


@pytest.mark.slow
def test_concurrent_realtime_sessions_each_get_their_own_clip(server, demo):
    """Three Wyoming and three vosk clients at real-time pace, at once: each transcript is the offline decode
    of its own clip (so no client's audio shows in another's transcript)."""
    names = clip_names()[:6]
    clips = [clip(n)[0] for n in names]
    want = [alone(demo, a) for a in clips]
    assert all(near(w, offline(demo, a)) for w, a in zip(want, clips))
    assert len(set(want)) == len(want)

    async def go():
        jobs = [wyoming_transcribe(server.wyoming, pcm16(a), realtime=True) if i % 2 == 0
                else vosk_transcribe(server.websocket, pcm16(a), realtime=True, chunk_bytes=3200)
                for i, a in enumerate(clips)]
        return await asyncio.gather(*jobs)

    results = asyncio.run(go())
    assert [r.get("text") for r in results] == want
    for r, w in zip(results, want):
        others = [x for x in want if x != w]
        assert not any(o in r["text"] for o in others)
    wait_for(lambda: server.server.admission.active == 0, "every session closed", 10)


def _workers() -> int:
    return sum(1 for t in threading.enumerate() if t.name in ("pipeline-worker", "pipeline-stats") and t.is_alive())


@pytest.mark.slow
def test_a_client_killed_mid_stream_frees_its_session(server, demo):
    audio, _ = clip(clip_names()[2])
    before = _workers()

    async def go():
        await vosk_transcribe(server.websocket, pcm16(audio), stop_after=5)  # leaves without eof, mid-utterance

        import socket

        from wyoming.audio import AudioChunk, AudioStart
        from wyoming.event import write_event
        sock = socket.create_connection(("127.0.0.1", server.wyoming), timeout=10)
        f = sock.makefile("wb")
        write_event(AudioStart(16000, 2, 1).event(), f)
        write_event(AudioChunk(16000, 2, 1, pcm16(audio[:16000])).event(), f)
        f.flush()
        wait_for(lambda: server.server.admission.active >= 1 and _workers() > before, "the session started", 10)
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    asyncio.run(go())
    wait_for(lambda: server.server.admission.active == 0 and _workers() == before, "sessions freed, threads joined", 30)
    out = asyncio.run(vosk_transcribe(server.websocket, pcm16(audio)))  # and the server still serves
    assert out["text"] == alone(demo, audio)


@pytest.mark.slow
def test_malformed_input_gets_one_error_and_a_close_while_others_are_served(server, demo):
    import websockets

    audio, _ = clip(clip_names()[3])

    async def bad_wyoming():
        reader, writer = await asyncio.open_connection("127.0.0.1", server.wyoming)
        writer.write(b"this is not an event\n")
        await writer.drain()
        lines = await asyncio.wait_for(reader.read(), TIMEOUT_S)  # everything until the server closes
        writer.close()
        return lines

    async def bad_format():
        from wyoming.audio import AudioStart
        from wyoming.client import AsyncTcpClient
        async with AsyncTcpClient("127.0.0.1", server.wyoming, read_timeout=TIMEOUT_S) as client:
            await client.write_event(AudioStart(16000, 7, 1).event())
            first = await client.read_event()
            return first, await client.read_event()

    async def bad_vosk():
        async with websockets.connect(f"ws://127.0.0.1:{server.websocket}") as ws:
            await ws.send("hello")
            reply = json.loads(await ws.recv())
            await asyncio.wait_for(ws.wait_closed(), TIMEOUT_S)
            return reply, ws.close_code

    async def go():
        good = asyncio.create_task(vosk_transcribe(server.websocket, pcm16(audio), realtime=True, chunk_bytes=3200))
        results = await asyncio.gather(bad_wyoming(), bad_format(), bad_vosk())
        return results, await good

    (raw, (fmt_err, fmt_end), (vosk_reply, vosk_code)), good = asyncio.run(go())
    header = json.loads(raw.split(b"\n")[0])
    assert header["type"] == "error" and raw.count(b'"type"') == 1
    assert b"malformed" in raw
    assert fmt_err.type == "error" and "width" in fmt_err.data["text"] and fmt_end is None
    assert "error" in vosk_reply and vosk_code == 1007
    assert good["text"] == offline(demo, audio)


@pytest.mark.slow
def test_over_max_sessions_a_client_is_refused_with_a_reason(demo):
    import websockets
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe

    with ServerThread(demo, Limits(max_sessions=1, idle_timeout_s=30)) as s:
        async def go():
            async with websockets.connect(f"ws://127.0.0.1:{s.websocket}") as holder:
                await holder.send(json.dumps({"config": {"sample_rate": 16000}}))
                wait_for(lambda: s.server.admission.active == 1, "the first session admitted", 10)
                async with websockets.connect(f"ws://127.0.0.1:{s.websocket}") as second:
                    await asyncio.wait_for(second.wait_closed(), TIMEOUT_S)
                    ws_refusal = (second.close_code, second.close_reason)
                async with AsyncTcpClient("127.0.0.1", s.wyoming, read_timeout=TIMEOUT_S) as client:
                    await client.write_event(Describe().event())
                    wy_refusal = await client.read_event()
            return ws_refusal, wy_refusal

        (code, reason), event = asyncio.run(go())
        assert code == 1013 and "max-sessions" in reason
        assert event.type == "error" and event.data["code"] == "busy"
        wait_for(lambda: s.server.admission.active == 0, "the holder left", 10)
        assert s.server.admission.refused == 2


@pytest.mark.slow
def test_token_is_required_when_set_and_idle_clients_are_closed(demo):
    import websockets
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe

    audio, _ = clip(clip_names()[4])
    with ServerThread(demo, Limits(token="s3cret", idle_timeout_s=1.0)) as s:
        async def go():
            async with websockets.connect(f"ws://127.0.0.1:{s.websocket}") as ws:
                await asyncio.wait_for(ws.wait_closed(), TIMEOUT_S)
                no_token = (ws.close_code, ws.close_reason)
            with_token = await vosk_transcribe(s.websocket, pcm16(audio), query="?token=s3cret")
            async with AsyncTcpClient("127.0.0.1", s.wyoming, read_timeout=TIMEOUT_S) as client:
                await client.write_event(Describe().event())
                wy_no_token = await client.read_event()
            wy_token = await wyoming_transcribe(s.wyoming, pcm16(audio), token="s3cret")
            async with AsyncTcpClient("127.0.0.1", s.wyoming, read_timeout=TIMEOUT_S) as client:
                ev = Describe().event()
                ev.data["token"] = "s3cret"
                await client.write_event(ev)
                await client.read_event()  # info
                idle = await client.read_event()  # then nothing for 1 s
            return no_token, with_token, wy_no_token, wy_token, idle

        no_token, with_token, wy_no_token, wy_token, idle = asyncio.run(go())
    want = offline(demo, audio)
    assert no_token[0] == 1008 and "token" in no_token[1]
    assert with_token["text"] == want
    assert wy_no_token.type == "error" and wy_no_token.data["code"] == "unauthorized"
    assert wy_token["text"] == want
    assert idle.type == "error" and idle.data["code"] == "idle-timeout"


@pytest.mark.slow
def test_streamer_serve_process_transcribes_and_stops_on_sigterm(tmp_path, demo):
    audio, _ = clip(clip_names()[5])
    env = streamer_env(tmp_path, STREAMER_SERVER_TOKEN="Zq9-xyzzy")
    proc = subprocess.Popen([sys.executable, "-m", "streamer", "serve", "--model", "demo", "--wyoming",
                             "tcp://127.0.0.1:0", "--websocket", "ws://127.0.0.1:0"], cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("streamer: serving"):
                break
        found = re.search(r"tcp://127\.0\.0\.1:(\d+).*ws://127\.0\.0\.1:(\d+)", "".join(lines))
        assert found, "".join(lines)
        wy, ws = int(found.group(1)), int(found.group(2))
        out = asyncio.run(vosk_transcribe(ws, pcm16(audio), query="?token=Zq9-xyzzy"))
        wy_out = asyncio.run(wyoming_transcribe(wy, pcm16(audio), token="Zq9-xyzzy"))
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the served process runs the same core as a local Recognizer, with the demo model's language model on
    # its finals by default (--decoder auto), as `streamer` does
    from streamer.app.options import DecoderOptions
    from streamer.server.run import served_rescorer

    assert "finals: beam search" in "".join(lines)
    rescorer = served_rescorer(DecoderOptions(), demo)
    assert rescorer is not None
    want = alone(demo, audio, rescorer)
    assert out["text"] == want and wy_out["text"] == want
    assert near(alone(demo, audio), offline(demo, audio))
    assert proc.returncode == 0, rest
    assert "Zq9-xyzzy" not in "".join(lines) + rest  # no secrets in the log
    assert want not in rest  # nor transcripts
