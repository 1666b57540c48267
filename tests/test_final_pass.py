"""The final pass run early, during the VAD hangover: the same final as a pass run when the hangover has run
out, computed before it (pure core, hand-built models)."""

from __future__ import annotations

import dataclasses

import numpy as np

from streamer.core.config import Config, VadConfig, WindowConfig
from streamer.core.events import AudioChunk, FinalEvent, PartialEvent
from streamer.core.recognizer import Recognizer
from streamer.core.vad import VadSegmenter

from helpers import ContextModel, energy_speech, speech_like

SR = 16000


class PassRecorder(ContextModel):
    """A context-dependent model that records each final pass (a call without a start sample): its length
    and how much audio the recognizer had been fed when it ran."""

    def __init__(self) -> None:
        super().__init__()
        self.fed = 0
        self.passes: list[tuple[int, int]] = []

    def logits(self, audio, start_sample=None):
        if start_sample is None:
            self.passes.append((len(audio), self.fed))
        return super().logits(audio, start_sample)


def run(audio, early: bool, silence_ms: int = 150, chunk: int = 320, hops: int = 1):
    cfg = Config(vad=VadConfig(confirm="off"), window=WindowConfig(final_pass_early=early, final_pass_silence_ms=silence_ms))
    model = PassRecorder()
    rec = Recognizer(model, cfg, vad=VadSegmenter(cfg.vad, classifier=energy_speech), max_hops_per_step=hops)
    events = []
    for i in range(0, len(audio), chunk):
        model.fed = min(i + chunk, len(audio))
        events += rec.feed(AudioChunk(i, audio[i:i + chunk], SR))
    events += rec.finish()
    return rec, model, events


def recording(pause_s: float, seed: int = 3) -> np.ndarray:
    z = lambda s: np.zeros(int(s * SR), np.float32)  # noqa: E731
    return np.concatenate([z(0.6), speech_like(seed, 1.5), z(pause_s), speech_like(seed + 1, 1.2), z(1.0)])


def finals(events):
    return [(f.text, f.words, f.start_s, f.end_s, f.full_pass) for f in events if isinstance(f, FinalEvent)]


def test_early_pass_gives_the_same_finals_before_the_hangover_runs_out():
    audio = recording(pause_s=1.0)
    late_rec, late_model, late = run(audio, early=False)
    rec, model, events = run(audio, early=True)
    assert finals(events) == finals(late) and len(finals(events)) == 2 and all(f[-1] for f in finals(events))
    assert rec.early_passes == rec.early_passes_used == 2 and late_rec.early_passes == 0
    vad = Config().vad
    for (n_early, fed_early), (n_late, fed_late) in zip(model.passes, late_model.passes):
        assert n_early == n_late  # the same input
        # run once the utterance's audio and the silence it hears had arrived: hangover - tail - silence
        # (450 - 150 - 150 ms) before the pass that waits for the end of the hangover
        assert fed_late - fed_early >= (vad.hangover_ms - vad.tail_ms - 150) * SR // 1000 - 320


def test_a_pause_shorter_than_the_hangover_drops_the_early_pass_and_the_final_is_still_whole():
    """Speech that goes on after a pause longer than tail + silence but shorter than the hangover: the pass
    run in the pause is thrown away (counted), the windows catch up, and the final covers both stretches."""
    audio = recording(pause_s=0.38)
    rec, model, events = run(audio, early=True)
    _, _, late = run(audio, early=False)
    assert finals(events) == finals(late) and len(finals(events)) == 1
    assert rec.early_passes == 2 and rec.early_passes_used == 1
    # the windows went on after the pause: partials show the second stretch before the final
    final_at = next(e.audio_time_s for e in events if isinstance(e, FinalEvent))
    assert any(isinstance(e, PartialEvent) and 0.6 + 1.5 + 0.38 + 0.5 < e.audio_time_s < final_at for e in events)


def test_early_pass_is_the_same_in_catch_up_and_whole_file_feeding():
    audio = recording(pause_s=1.0, seed=11)
    reference = finals(run(audio, early=False)[2])
    assert finals(run(audio, early=True, chunk=16000, hops=4)[2]) == reference
    assert finals(run(audio, early=True, chunk=len(audio))[2]) == reference


def test_final_pass_hears_the_configured_silence():
    audio = recording(pause_s=1.0, seed=5)
    for silence_ms in (0, 150, 300):
        rec, model, events = run(audio, early=True, silence_ms=silence_ms)
        first = [f for f in events if isinstance(f, FinalEvent)][0]
        start = rec.schedule.first_frame(int(round(first.start_s * SR))) * 320
        assert model.passes[0][0] == int(round(first.end_s * SR)) + silence_ms * SR // 1000 - start


def test_no_early_pass_without_the_final_pass():
    audio = recording(pause_s=1.0)
    cfg = Config(vad=VadConfig(confirm="off"), window=WindowConfig(final_pass_max_s=0.0))
    model = PassRecorder()
    rec = Recognizer(model, cfg, vad=VadSegmenter(cfg.vad, classifier=energy_speech))
    events = rec.feed(AudioChunk(0, audio, SR)) + rec.finish()
    assert model.passes == [] and rec.early_passes == 0
    assert not any(f.full_pass for f in events if isinstance(f, FinalEvent))
    assert dataclasses.replace(WindowConfig(), final_pass_silence_ms=0).validate() is None


def test_the_rescorer_runs_with_the_early_pass_and_its_text_is_the_final():
    """Beam search of the final (a rescorer) is done during the hangover too: at the end nothing is left."""
    audio = recording(pause_s=1.0, seed=13)
    cfg = Config(vad=VadConfig(confirm="off"), window=WindowConfig(final_pass_silence_ms=150))
    model = PassRecorder()
    fed_at_call = []

    def rescorer(logits):
        fed_at_call.append(model.fed)
        return f"RESCORED {len(logits)}"

    rec = Recognizer(model, cfg, vad=VadSegmenter(cfg.vad, classifier=energy_speech), final_rescorer=rescorer)
    events = []
    for i in range(0, len(audio), 320):
        model.fed = min(i + 320, len(audio))
        events += rec.feed(AudioChunk(i, audio[i:i + 320], SR))
    finals_ = [e for e in events if isinstance(e, FinalEvent)]
    assert [f.text.split()[0] for f in finals_] == ["RESCORED"] * 2 and len(fed_at_call) == 2
    assert [rec.geometry.frames_in(n) for n, _ in model.passes] == [int(f.text.split()[1]) for f in finals_]
    assert fed_at_call == [fed for _, fed in model.passes]  # with its pass, not when the final was given
    assert all(call < int(f.audio_time_s * SR) for call, f in zip(fed_at_call, finals_))
