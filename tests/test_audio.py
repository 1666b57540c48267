"""Resampling, ring buffer and audio files: the bookkeeping that must never lose or duplicate a sample."""

import time

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.audio.files import iter_blocks_16k, probe, read_16k
from streamer.audio.resample import StreamingResampler, to_mono
from streamer.audio.ringbuffer import RingBuffer
from streamer.errors import AudioFileError


@settings(max_examples=30, deadline=None)
@given(rate=st.sampled_from([8000, 16000, 22050, 44100, 48000]), n=st.integers(0, 30000),
       cuts=st.lists(st.integers(1, 5000), min_size=1, max_size=12))
def test_streaming_resampler_blocks_equal_one_pass(rate, n, cuts):
    x = np.random.default_rng(n).normal(0, 0.3, n).astype(np.float32)
    whole = StreamingResampler(rate, 16000)
    ref = np.concatenate([whole.process(x), whole.flush()])
    r = StreamingResampler(rate, 16000)
    out, i, k = [], 0, 0
    while i < n:
        step = cuts[k % len(cuts)]
        out.append(r.process(x[i : i + step]))
        i += step
        k += 1
    out.append(r.flush())
    got = np.concatenate(out) if out else np.zeros(0, np.float32)
    assert len(got) == len(ref)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert r.samples_in == n


def test_resampled_length_matches_duration():
    x = np.zeros(44100 * 3, np.float32)
    r = StreamingResampler(44100, 16000)
    out = np.concatenate([r.process(x[i : i + 441]) for i in range(0, len(x), 441)] + [r.flush()])
    assert abs(len(out) - 48000) <= 1


def test_to_mono_averages_channels():
    stereo = np.stack([np.ones(10), -np.ones(10) * 0.5], axis=1)
    np.testing.assert_allclose(to_mono(stereo), 0.25)


@settings(max_examples=50, deadline=None)
@given(cap=st.integers(10, 500), writes=st.lists(st.integers(0, 700), max_size=30),
       read_every=st.integers(1, 4))
def test_ring_buffer_counts_every_dropped_sample(cap, writes, read_every):
    ring = RingBuffer(cap)
    total, got, next_value = 0, [], 0
    for i, n in enumerate(writes):
        ring.write(np.arange(next_value, next_value + n, dtype=np.float32))
        next_value += n
        total += n
        if i % read_every == 0:
            chunk = ring.read(timeout=0)
            got.append(chunk)
    ring.close()
    got.append(ring.read(timeout=0))
    received = sum(len(c.samples) for c in got)
    assert received + ring.dropped_samples == total
    for c in got:  # samples are addressed by absolute index: value == index
        np.testing.assert_array_equal(c.samples, np.arange(c.start_sample, c.end_sample, dtype=np.float32))


def test_ring_buffer_blocking_write_loses_nothing():
    import threading

    ring = RingBuffer(100)
    data = np.arange(5000, dtype=np.float32)

    def writer():
        for i in range(0, len(data), 37):
            ring.write(data[i : i + 37], block=True)
        ring.close()

    t = threading.Thread(target=writer)
    t.start()
    out = []
    while True:
        c = ring.read(timeout=1)
        if len(c.samples) == 0 and ring.closed and ring.unread() == 0:
            break
        out.append(c.samples)
    t.join()
    np.testing.assert_array_equal(np.concatenate(out), data)
    assert ring.dropped_samples == 0


@pytest.mark.parametrize("rate,channels,fmt", [(44100, 2, "WAV"), (48000, 1, "FLAC"), (22050, 1, "OGG"), (8000, 3, "WAV")])
def test_files_any_rate_and_channels(tmp_path, rate, channels, fmt):
    t = np.arange(int(rate * 1.5)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    data = np.stack([tone] * channels, axis=1)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, data, rate, format=fmt)
    info = probe(path)
    assert (info.sample_rate, info.channels) == (rate, channels)
    audio = read_16k(path)
    assert abs(len(audio) - 24000) <= 2
    # a 440 Hz tone survives: dominant frequency of the 16 kHz output
    spec = np.abs(np.fft.rfft(audio[2000:18000]))
    assert abs(np.argmax(spec) * 16000 / 16000 - 440) <= 2
    assert sum(len(b) for b in iter_blocks_16k(path, block_frames=333)) == len(audio)


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(AudioFileError, match="not found"):
        probe(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_text("this is not audio")
    with pytest.raises(AudioFileError, match="cannot read"):
        probe(junk)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1)), 16000)
    with pytest.raises(AudioFileError, match="empty"):
        probe(empty)
    with pytest.raises(AudioFileError, match="folder"):
        probe(tmp_path)


def test_ring_buffer_reader_waiting_for_min_samples_is_woken_only_when_they_are_there():
    """A reader asking for at least N samples is not woken by writes that leave fewer (the worker in silence:
    one wake-up per IDLE_READ_MS, not one per capture block); close still wakes it at once."""
    import threading

    ring = RingBuffer(10_000)
    notified = []
    notify_all = ring._cond.notify_all
    ring._cond.notify_all = lambda: (notified.append(ring.unread()), notify_all())  # type: ignore[method-assign]
    got = []

    def read() -> None:
        got.append(ring.read(timeout=30, min_samples=1000))

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    while ring._want != 1000:  # the reader is waiting
        assert time.monotonic() < deadline, "the reader never waited"
        time.sleep(0.001)
    assert ring.shortfall() == 1000
    for i in range(3):
        ring.write(np.full(320, i, np.float32))
    assert notified == [] and reader.is_alive()  # 960 < 1000: nobody woken
    assert ring.shortfall() == 40  # what the capture thread may leave in its queue until then
    ring.write(np.full(320, 3, np.float32))
    reader.join(10)
    assert notified[0] == 1280  # (then the reader's own notify, for a blocked writer)
    assert len(got) == 1 and len(got[0].samples) == 1280 and got[0].start_sample == 0
    assert ring.shortfall() == 0  # nobody waits
    # close wakes a reader that asked for more than will ever come
    reader = threading.Thread(target=read)
    reader.start()
    while ring._want != 1000:
        assert time.monotonic() < deadline, "the reader never waited"
        time.sleep(0.001)
    ring.write(np.zeros(10, np.float32))
    ring.close()
    reader.join(10)
    assert not reader.is_alive() and len(got[1].samples) == 10
