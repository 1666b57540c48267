"""The stitching invariant: streamed committed text equals the offline decode of the same frames."""

import dataclasses

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.core.config import Config, VadConfig, WindowConfig
from streamer.core.decoding import GreedyDecoder
from streamer.core.events import AudioChunk, FinalEvent, PartialEvent
from streamer.core.recognizer import Recognizer
from streamer.core.stitching import CTCStitcher, collapse
from streamer.core.vad import VadSegmenter

from helpers import ContextModel, LocalModel, always_speech


def offline_text(model, audio):
    return GreedyDecoder(model.vocabulary, model.geometry.frame_s).decode_logits(model.logits(audio))


def stream(model, audio, window, chunk_samples, max_segment_s=20.0, final_pass_max_s=0.0, rescorer=None):
    """Stream through the core; finals from the stitched windows unless final_pass_max_s is given."""
    window = dataclasses.replace(window, final_pass_max_s=final_pass_max_s)
    cfg = Config(window=window, vad=VadConfig(preroll_ms=0, max_segment_s=max_segment_s))
    vad = VadSegmenter(cfg.vad, classifier=always_speech)
    rec = Recognizer(model, cfg, vad=vad, final_rescorer=rescorer)
    events = []
    for i in range(0, len(audio), chunk_samples):
        events += rec.feed(AudioChunk(i, audio[i : i + chunk_samples], 16000))
    events += rec.finish()
    return events


def random_audio(seed, seconds):
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    env = np.repeat(rng.uniform(0, 0.5, n // 800 + 1), 800)[:n]
    return (rng.normal(0, 1, n) * env).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), seconds=st.floats(0.2, 6.0), hop_ms=st.sampled_from([20, 60, 100, 240, 500]),
       left_ms=st.sampled_from([0, 40, 300, 1000]), look_ms=st.sampled_from([0, 20, 160, 320, 800]),
       chunk=st.sampled_from([160, 320, 1000, 4801]))
def test_streamed_equals_offline_for_local_model(seed, seconds, hop_ms, left_ms, look_ms, chunk):
    model = LocalModel()
    audio = random_audio(seed, seconds)
    events = stream(model, audio, WindowConfig(hop_ms, left_ms, look_ms), chunk)
    finals = [e for e in events if isinstance(e, FinalEvent)]
    assert " ".join(f.text for f in finals if f.text) == offline_text(model, audio)
    # every partial's committed text extends the one before and is a prefix of the segment's final
    partials = [e for e in events if isinstance(e, PartialEvent)]
    for a, b in zip(partials, partials[1:]):
        assert b.committed_text.startswith(a.committed_text)
    last = finals[-1].text if finals else ""  # an utterance without text gives no final
    for p in partials:
        assert last.startswith(p.committed_text)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_forced_split_of_long_speech_loses_nothing(seed):
    model = LocalModel()
    audio = random_audio(seed, 9.0)
    events = stream(model, audio, WindowConfig(240, 500, 160), 1600, max_segment_s=2.0)
    finals = [e for e in events if isinstance(e, FinalEvent)]
    assert sum(f.forced for f in finals) >= 2
    assert " ".join(f.text for f in finals if f.text) == offline_text(model, audio)
    starts = [f.start_s for f in finals]
    assert starts == sorted(starts)


def test_partials_show_committed_prefix_and_tentative_tail():
    model = LocalModel()
    audio = random_audio(3, 4.0)
    events = stream(model, audio, WindowConfig(240, 500, 320), 320)
    partials = [e for e in events if isinstance(e, PartialEvent)]
    assert partials
    assert {p.segment_id for p in partials} == {0}
    final = [e for e in events if isinstance(e, FinalEvent)][-1]
    assert final.text == offline_text(model, audio)
    committed = [p.committed_text for p in partials]
    assert len(set(committed)) > 3  # the text did grow along the way
    for i, (a, b) in enumerate(zip(partials, partials[1:])):
        # committed text only grows, from every partial to the next, and the final extends all of it
        assert b.committed_text.startswith(a.committed_text), (i, a.committed_text, b.committed_text)
        assert b.committed_until_s > a.committed_until_s
    for p in partials:
        assert final.text.startswith(p.committed_text), (p.committed_text, final.text)
        assert abs(p.tentative_until_s - p.committed_until_s - 0.32) < 1e-6
        assert p.text == (p.committed_text + p.tentative_text).strip()


def test_letter_across_seam_is_not_doubled_or_dropped():
    # Frames: A A | A A _ A  with a seam between frame 1 and 2 and between 3 and 4.
    blank, a = 0, 7
    s = CTCStitcher(blank)
    s.commit(np.array([a, a]), 0)
    s.commit(np.array([a, a]), 2)
    assert [t.token_id for t in s.tokens] == [a]
    assert s.tokens[0].end_frame == 3
    s.commit(np.array([blank, a]), 4)
    assert [t.token_id for t in s.tokens] == [a, a]
    whole = collapse([a, a, a, a, blank, a], 0, blank).spans
    assert list(whole) == s.tokens


def test_tentative_continuation_adds_nothing():
    s = CTCStitcher(0)
    s.commit(np.array([5, 5]), 0)
    assert s.tentative(np.array([5, 5, 0]), 2) == ()
    assert [t.token_id for t in s.tentative(np.array([5, 0, 5]), 2)] == [5]


def test_words_have_frame_times():
    model = LocalModel()
    dec = GreedyDecoder(model.vocabulary, 0.02)
    # H I | T O  at frames 10, 11, 20, 30, 31..33
    spans = collapse([0] * 10 + [11, 10] + [0] * 8 + [4] + [0] * 9 + [6, 8, 8, 8], 0, 0).spans
    words = dec.words(spans)
    assert [w.text for w in words] == ["HI", "TO"]
    assert words[0].start_s == 0.2 and words[0].end_s == 0.24
    assert words[1].start_s == 0.6 and words[1].end_s == 0.68


def test_no_model_work_during_silence():
    model = LocalModel()
    cfg = Config()
    from helpers import energy_speech
    rec = Recognizer(model, cfg, vad=VadSegmenter(cfg.vad, classifier=energy_speech))
    silence = np.zeros(16000 * 5, dtype=np.float32)
    for i in range(0, len(silence), 320):
        rec.feed(AudioChunk(i, silence[i : i + 320], 16000))
    rec.finish()
    assert model.calls == 0


def test_tentative_text_continues_or_starts_a_word():
    from streamer.core.stitching import TokenSpan

    model = LocalModel()
    rec = Recognizer(model, Config())
    voc = model.vocabulary.tokens
    tid = {t: i for i, t in enumerate(voc)}
    rec.stitcher.tokens = [TokenSpan(tid[c], i, i) for i, c in enumerate("HI|TH")]
    cont = rec._tentative_text([TokenSpan(tid["E"], 9, 9), TokenSpan(tid["|"], 10, 10), TokenSpan(tid["A"], 11, 11)])
    assert cont == "E A"  # continues "TH" -> "THE", then a new word
    new = rec._tentative_text([TokenSpan(tid["|"], 9, 9), TokenSpan(tid["A"], 10, 10)])
    assert new == " A"
    event = PartialEvent(0, 0, 0, "HI TH", cont, 0, 0)
    assert event.text == "HI THE A"


# -- the final pass: one model pass over the whole utterance for its final -----------------------------------
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), seconds=st.floats(0.5, 6.0), hop_ms=st.sampled_from([60, 160, 240]),
       left_ms=st.sampled_from([0, 300, 750]), look_ms=st.sampled_from([0, 160, 320]),
       chunk=st.sampled_from([320, 1000, 4801]))
def test_final_pass_equals_offline_decode_of_a_context_dependent_model(seed, seconds, hop_ms, left_ms, look_ms, chunk):
    model = ContextModel()
    audio = random_audio(seed, seconds)
    events = stream(model, audio, WindowConfig(hop_ms, left_ms, look_ms), chunk, final_pass_max_s=20.0)
    finals = [e for e in events if isinstance(e, FinalEvent)]
    assert len(finals) == 1 and finals[0].full_pass and not finals[0].forced
    assert finals[0].text == offline_text(model, audio)
    dec = GreedyDecoder(model.vocabulary, model.geometry.frame_s)
    whole = collapse(model.logits(audio).argmax(axis=-1), 0, 0).spans
    assert finals[0].words == tuple(dec.words(whole))  # word times on the same 20 ms grid


def test_stitched_finals_of_a_context_dependent_model_differ_without_the_pass():
    """The guard for the test above: this model really does depend on context, so the pass matters."""
    model = ContextModel()
    differ = 0
    for seed in range(5):
        audio = random_audio(seed, 4.0)
        stitched = [e for e in stream(model, audio, WindowConfig(160, 750, 320), 320) if isinstance(e, FinalEvent)]
        assert not any(f.full_pass for f in stitched)
        differ += " ".join(f.text for f in stitched if f.text) != offline_text(model, audio)
    assert differ >= 3


def test_final_pass_limits_long_and_split_utterances_to_the_stitched_windows():
    model = ContextModel()
    audio = random_audio(7, 5.0)
    longer = [e for e in stream(model, audio, WindowConfig(160, 750, 320), 320, final_pass_max_s=3.0)
              if isinstance(e, FinalEvent)]
    assert len(longer) == 1 and not longer[0].full_pass  # 5 s utterance, 3 s limit: stitched
    split = [e for e in stream(model, random_audio(8, 9.0), WindowConfig(240, 500, 160), 1600, max_segment_s=2.0,
                               final_pass_max_s=20.0) if isinstance(e, FinalEvent)]
    assert sum(f.forced for f in split) >= 2 and not any(f.full_pass for f in split)


def test_final_pass_feeds_the_rescorer_the_whole_utterance():
    model = ContextModel()
    audio = random_audio(9, 3.0)
    seen = []
    rescorer = lambda logits: seen.append(logits) or "RESCORED"
    finals = [e for e in stream(model, audio, WindowConfig(160, 750, 320), 320, final_pass_max_s=20.0,
                                rescorer=rescorer) if isinstance(e, FinalEvent)]
    assert [f.text for f in finals] == ["RESCORED"] and len(seen) == 1
    np.testing.assert_array_equal(seen[0], model.logits(audio))


def test_final_pass_hears_the_silence_the_vad_waited_for():
    """The pass covers the utterance plus the hangover silence heard after it (as an offline decode of the
    recording would), and nothing of what follows."""
    from helpers import energy_speech

    class Recording(LocalModel):
        def __init__(self):
            super().__init__()
            self.passes = []

        def logits(self, audio, start_sample=None):
            if start_sample is None:
                self.passes.append(len(audio))
            return super().logits(audio, start_sample)

    model = Recording()
    rng = np.random.default_rng(0)
    audio = np.concatenate([np.zeros(16000, np.float32), (rng.normal(0, 0.2, 32000)).astype(np.float32),
                            np.zeros(40000, np.float32), (rng.normal(0, 0.2, 16000)).astype(np.float32)])
    cfg = Config()
    rec = Recognizer(model, cfg, vad=VadSegmenter(cfg.vad, classifier=energy_speech))
    events = []
    for i in range(0, len(audio), 320):
        events += rec.feed(AudioChunk(i, audio[i : i + 320], 16000))
    first = [e for e in events if isinstance(e, FinalEvent)]
    assert len(first) == 1 and first[0].full_pass
    start = rec.schedule.first_frame(int(round(first[0].start_s * 16000))) * 320
    heard = int(round(first[0].end_s * 16000)) + cfg.window.final_pass_silence_ms * 16
    assert model.passes == [heard - start]
    assert heard < 16000 + 32000 + 40000  # the next utterance is not in it
