"""tools/train_demo_model.py (and the corpus it draws from, tools/demo_corpus.py): pure helpers in-process,
and tiny end-to-end training runs in a process of their own (marked slow)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_training_dev_decode_leaves_out_padding_frames():
    """The training script's dev CER decodes each clip only up to its own frames (hand-built logits: a
    short clip 'HI' padded to the length of a longer one whose padding frames say 'X')."""
    torch = pytest.importorskip("torch")
    from train_demo_model import greedy_decode

    ids = {"<pad>": 0, "|": 4, "H": 11, "I": 10, "X": 28, "O": 8}
    rows = [["H", "<pad>", "I", "I", "X", "X"], ["H", "O", "|", "H", "<pad>", "I"]]
    logits = torch.full((2, 6, 32), -10.0)
    for b, row in enumerate(rows):
        for t, tok in enumerate(row):
            logits[b, t, ids[tok]] = 10.0
    assert greedy_decode(logits, [4, 6]) == ["HI", "HO HI"]
    assert greedy_decode(logits) == ["HIX", "HO HI"]


def test_training_uses_bf16_only_where_the_device_runs_it_natively():
    """bf16 autocast by default only on a GPU with bf16 or a CPU with avx512_bf16 / AMX: on an AVX2 CPU
    it is emulated and about 5x slower than fp32. Flags as /proc/cpuinfo lists them."""
    pytest.importorskip("torch")
    from train_demo_model import cpu_flags, native_bf16

    avx2 = " fpu sse sse2 avx avx2 fma f16c"
    assert not native_bf16("cpu", avx2)
    assert not native_bf16("cpu", avx2 + " avx512f avx512bw avx512vl")  # AVX-512 without its bf16 extension
    assert native_bf16("cpu", avx2 + " avx512f avx512_bf16 avx512vl")
    assert native_bf16("cpu", avx2 + " amx_bf16 amx_tile amx_int8")
    assert not native_bf16("cpu", "")  # no /proc/cpuinfo (macOS, Windows): fp32
    assert native_bf16("cuda", "", cuda_bf16=True) and not native_bf16("cuda", avx2 + " avx512_bf16")
    assert isinstance(cpu_flags(), str)


def test_training_short_clip_curriculum_draws_only_short_clips():
    """--short-first-min: while it lasts, batches hold clips about --short-max-s long or shorter (the anchor
    is drawn among those and the rest of the batch has similar lengths); without it, all lengths occur."""
    import random
    torch = pytest.importorskip("torch")
    from train_demo_model import SR, Pool

    pool = Pool(torch.device("cpu"), max_seconds=10_000, seed=0)
    for i in range(400):
        seconds = (1.0, 2.0, 6.0, 9.0)[i % 4]
        pool.add(np.zeros(int(seconds * SR), dtype=np.float32), "HI THERE")
    rng = random.Random(1)
    short = [len(c) / SR for _ in range(50) for c in pool.sample_batch(rng, 40 * SR, int(2.5 * SR))[0]]
    every = [len(c) / SR for _ in range(50) for c in pool.sample_batch(rng, 40 * SR)[0]]
    assert max(short) <= 2.0 and min(short) == 1.0
    assert {1.0, 2.0, 6.0, 9.0} <= set(every)


def _tiny_training(tmp_path: Path, out: Path, *extra: str, rc: int = 0) -> str:
    """Run the training script on a two-line corpus with a tiny model, in its own process (it forks
    espeak-ng workers; in-process, a forked worker once hung the suite); return its stdout (with
    rc != 0: check the exit status and return stderr)."""
    import subprocess
    import sys
    corpus = tmp_path / "corpus"
    manifest = tmp_path / "manifest.tsv"
    if not corpus.exists():
        corpus.mkdir()
        (corpus / "train.tsv").write_text("fortunes\tthe cat sat on the mat.\nman\tprint the working directory.\n")
        (corpus / "heldout.tsv").write_text("fortunes\ta dog ran in the park.\n")
        lines = (ROOT / "tools" / "demo_heldout_manifest.tsv").read_text().splitlines()
        manifest.write_text("\n".join([lines[0], lines[1], lines[-1]]) + "\n")  # one item per group
    args = ["--corpus-dir", str(corpus), "--manifest", str(manifest), "--out", str(out), "--device", "cpu",
            "--workers", "1", "--threads", "1", "--pool-hours", "0.003", "--gen-max-minutes", "0.5",
            "--hidden", "32", "--layers", "1", "--heads", "2", "--ff", "64", "--conv-dim", *["8"] * 7,
            "--batch-seconds", "8", "--lr", "1e-3", "--warmup-steps", "1",
            "--eval-every-min", "100", "--ckpt-every-min", "100", "--dev-per-group", "1", *extra]
    driver = (f"import sys; sys.path.insert(0, {str(ROOT / 'tools')!r}); import demo_corpus, train_demo_model; "
              "demo_corpus.wordlist_for_random = lambda: ['cat', 'dog', 'mat']; "  # no wamerican needed
              f"train_demo_model.main({list(args)!r})")
    run = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=300)
    assert run.returncode == rc, run.stderr[-2000:]
    return run.stdout if rc == 0 else run.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_training_stop_after_min_saves_a_loadable_model_before_the_lr_schedule_ends(tmp_path):
    """A tiny end-to-end run of the training script: clips from a two-line corpus, a tiny model.
    --stop-after-min ends training (and saves a complete HF folder) while the LR schedule, laid over
    --max-minutes, is still near its peak: how phases 1 and 3 of the committed recipe ended."""
    pytest.importorskip("torch")
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    out = tmp_path / "model"
    stdout = _tiny_training(tmp_path, out, "--max-minutes", "2", "--stop-after-min", "0.05")
    assert "stopped after" in stdout

    info = json.loads((out / "training_info.json").read_text())
    assert info["stopped_early"]["minutes"] >= 0.05 and info["train_minutes"] < 1.0
    assert info["stopped_early"]["schedule_fraction"] < 0.1 and info["last_lr"] > 0.9e-3
    assert info["steps"] == info["stopped_early"]["step"] >= 1
    assert set(info["final_dev_fp32"]) == {"seen_voices", "heldout_voice"}
    model = Wav2Vec2ForCTC.from_pretrained(out)
    assert model.config.hidden_size == 32 and list(model.config.conv_stride) == [5, 2, 2, 2, 2, 2, 2]
    Wav2Vec2Processor.from_pretrained(out)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_training_resumed_after_a_stop_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    """--resume continues from <out>_latest/trainer_state.pt (weights, optimizer, step, clock, RNG states,
    the fixed pool regenerated clip for clip): with a step schedule on one thread, a run stopped at step 3
    and resumed ends bit for bit where an uninterrupted 6-step run ends (dropout and time masks on)."""
    pytest.importorskip("torch")
    from safetensors.numpy import load_file

    steps = ("--max-steps", "6", "--max-minutes", "100", "--dropout", "0.1", "--mask-time-prob", "0.3")
    whole, part = tmp_path / "whole", tmp_path / "part"
    _tiny_training(tmp_path, whole, *steps)
    assert "stopped at step 3" in _tiny_training(tmp_path, part, *steps, "--stop-after-steps", "3")
    stopped = load_file(part / "model.safetensors")
    # as if killed between setting the old checkpoint aside and moving the new one in
    (tmp_path / "part_latest").rename(tmp_path / "part_latest.old")
    assert "resuming from" in _tiny_training(tmp_path, part, *steps, "--resume")

    info = json.loads((part / "training_info.json").read_text())
    assert info["steps"] == 6 and [r["step"] for r in info["resumed"]] == [3] and "stopped_early" not in info
    a, b = load_file(whole / "model.safetensors"), load_file(part / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], stopped[k]) for k in a)  # steps 4-6 did change the weights
    # a checkpoint of another model: one line naming the problem, no traceback
    err = _tiny_training(tmp_path, part, *steps, "--resume", "--hidden", "48", rc=1)
    assert "holds a model of another shape" in err and "Traceback" not in err
    # no --resume: the old checkpoint is ignored and the run starts afresh
    assert "resuming" not in _tiny_training(tmp_path, part, *steps, "--stop-after-steps", "1")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_training_step_switches_act_at_their_step_on_any_machine(tmp_path):
    """--freeze-feature-encoder-after-steps freezes the convolutional front end after exactly N steps
    (the -min switch acts at a machine-dependent step): its weights at the end of a 5-step run are those of
    a run stopped at step 2, while the transformer went on learning. Giving a switch in minutes and in steps
    at once is one clear error line."""
    pytest.importorskip("torch")
    from safetensors.numpy import load_file

    steps = ("--max-steps", "5", "--max-minutes", "100", "--short-first-steps", "1")
    frozen, stopped = tmp_path / "frozen", tmp_path / "stopped"
    assert "feature encoder frozen at step 2" in _tiny_training(
        tmp_path, frozen, *steps, "--freeze-feature-encoder-after-steps", "2")
    _tiny_training(tmp_path, stopped, *steps, "--stop-after-steps", "2")
    info = json.loads((frozen / "training_info.json").read_text())
    assert info["steps"] == 5 and info["feature_encoder_frozen_at"]["step"] == 2
    a, b = load_file(frozen / "model.safetensors"), load_file(stopped / "model.safetensors")
    front = [k for k in a if "feature_extractor" in k]
    rest = [k for k in a if k.startswith("wav2vec2.encoder.layers")]
    assert front and rest
    assert all(np.array_equal(a[k], b[k]) for k in front)
    assert not all(np.array_equal(a[k], b[k]) for k in rest)

    err = _tiny_training(tmp_path, tmp_path / "both", *steps, "--short-first-min", "1", rc=2)
    assert "--short-first-min and --short-first-steps both given" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_training_feature_encoder_norm_and_transformer_layout_reach_the_saved_model(tmp_path):
    """--feat-extract-norm group (base-960h's front end: one GroupNorm on the first conv layer) and
    --no-stable-layer-norm (post-LN) build and save that architecture; the default is large-lv60's
    (LayerNorm on every conv layer, pre-LN)."""
    pytest.importorskip("torch")
    import torch
    from transformers import Wav2Vec2ForCTC

    steps = ("--max-steps", "1", "--max-minutes", "100", "--no-final-eval")
    _tiny_training(tmp_path, tmp_path / "group", *steps, "--feat-extract-norm", "group", "--no-stable-layer-norm")
    _tiny_training(tmp_path, tmp_path / "layer", *steps)
    group = Wav2Vec2ForCTC.from_pretrained(tmp_path / "group")
    layer = Wav2Vec2ForCTC.from_pretrained(tmp_path / "layer")
    assert (group.config.feat_extract_norm, group.config.do_stable_layer_norm) == ("group", False)
    assert (layer.config.feat_extract_norm, layer.config.do_stable_layer_norm) == ("layer", True)
    info = json.loads((tmp_path / "group" / "training_info.json").read_text())
    assert (info["architecture"]["feat_extract_norm"], info["architecture"]["do_stable_layer_norm"]) == ("group", False)
    convs = group.wav2vec2.feature_extractor.conv_layers
    assert isinstance(convs[0].layer_norm, torch.nn.GroupNorm) and not hasattr(convs[1], "layer_norm")
    assert all(isinstance(c.layer_norm, torch.nn.LayerNorm) for c in layer.wav2vec2.feature_extractor.conv_layers)


def test_training_stream_gate_hands_out_clip_indices_no_further_than_allowed():
    """The clip indices given to the espeak workers stay within `lead` of the clips taken and, once paced,
    below the limit training sets; close() ends the stream, also for a reader waiting for the next index
    (pool.terminate() waits for its reader). Whether the next index would wait is the gate's own state."""
    import threading

    from train_demo_model import StreamGate

    gate = StreamGate(start=10, lead=4)
    indices = gate.indices()
    assert [next(indices) for _ in range(4)] == [10, 11, 12, 13]
    assert not gate._open(14)  # a fifth index waits for a clip to be taken
    gate.took()
    gate.took()
    assert [next(indices) for _ in range(2)] == [14, 15] and not gate._open(16)
    gate.pace(16)  # the limit is below taken + lead = 17: nothing more
    gate.took()
    assert not gate._open(16)
    gate.pace(100)
    assert next(indices) == 16 and not gate._open(17)

    done = threading.Event()
    got: list[int] = []

    def read_rest() -> None:
        got.extend(indices)  # waits for index 17, which never opens
        done.set()

    reader = threading.Thread(target=read_rest, daemon=True)
    reader.start()
    gate.close()
    assert done.wait(5) and got == []
    reader.join(timeout=5)
    assert not reader.is_alive()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_training_paced_stream_generates_about_as_much_audio_as_it_trains_on(tmp_path):
    """--stream-data --stream-ratio R: while training, new clips are generated only as fast as R s of audio
    per s trained (plus a lead of 4 chunks of 16 clips per worker), not as fast as the workers go; the run
    ends cleanly (the workers' feed is closed before the pool is terminated). With --no-stream-data it is
    one error line."""
    pytest.importorskip("torch")
    import re
    steps = ("--max-steps", "8", "--max-minutes", "100", "--stream-data")
    paced = _tiny_training(tmp_path, tmp_path / "paced", *steps, "--stream-ratio", "0.5")
    first = int(re.search(r"generated (\d+) clips", paced).group(1))
    info = json.loads((tmp_path / "paced" / "training_info.json").read_text())
    clip_s = info["pool_hours"] * 3600 / info["clips_generated"]  # about the mean clip length
    allowed = first + 64 + 0.5 * info["audio_hours_seen"] * 3600 / clip_s
    assert first < info["clips_generated"] <= 1.5 * allowed
    unpaced = json.loads(_tiny_training(tmp_path, tmp_path / "unpaced", *steps) and
                         (tmp_path / "unpaced" / "training_info.json").read_text())
    assert unpaced["clips_generated"] > 1.5 * allowed
    err = _tiny_training(tmp_path, tmp_path / "both", *steps, "--stream-ratio", "1", "--no-stream-data", rc=2)
    assert "--stream-ratio needs" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_training_speaking_rate_and_pitch_ranges_reach_the_clips(tmp_path, monkeypatch):
    """--speed-wpm and --pitch set the espeak-ng rate and pitch the training clips are drawn from: the same
    clip of the stream (same text and voice) is far longer at 100 words a minute than at 300. A range the
    wrong way round is one error line."""
    import demo_corpus
    import train_demo_model as tdm
    monkeypatch.setattr(demo_corpus, "wordlist_for_random", lambda: ["cat", "dog", "mat"])
    (tmp_path / "train.tsv").write_text("fortunes\tthe cat sat on the mat.\n")

    def clip(i, speed_wpm):
        tdm._init_worker(str(tmp_path), set(), 3, speed_wpm, (50, 50))
        return tdm.make_clip(i)

    i = next(i for i in range(50) if (c := clip(i, tdm.SPEED_WPM)) is not None and c[1])
    slow, fast = clip(i, (100, 100, 100)), clip(i, (300, 300, 300))
    assert slow[1] == fast[1] != ""
    assert len(slow[0]) > 1.8 * len(fast[0])

    err = _tiny_training(tmp_path, tmp_path / "bad", "--speed-wpm", "200", "150", "170", rc=2)
    assert "--speed-wpm needs" in err and "Traceback" not in err


def test_training_multi_sentence_clips_join_pairs_with_a_pause_and_a_word_boundary():
    """--concat-p (v2): a batch's clips joined in pairs with 0.3-2 s of silence, labels with '|' between;
    an empty (non-speech) label adds no boundary; an odd clip out stays as it was."""
    torch = pytest.importorskip("torch")
    from train_demo_model import SR, concat_pairs

    clips = [torch.full((n,), 1000, dtype=torch.int16) for n in (SR, 2 * SR, SR, SR // 2, 3 * SR)]
    labels = [[11, 10], [8], [], [5, 6], [7]]
    out_c, out_l = concat_pairs(clips, labels, np.random.default_rng(0))
    assert out_l == [[11, 10, 4, 8], [5, 6], [7]]
    for (a, b), c in zip([(0, 1), (2, 3)], out_c):
        gap = len(c) - len(clips[a]) - len(clips[b])
        assert 0.3 * SR <= gap <= 2.0 * SR
        assert int((c == 0).sum()) == gap and bool((c[:len(clips[a])] == 1000).all())
    assert out_c[2] is clips[4]


def test_training_room_and_microphone_augmentation():
    """--reverb-p / --band-p (v2): reverberation leaves a decaying tail after the sound ends; the microphone
    response keeps speech frequencies (1 kHz within its +-6 dB EQ and the filters' roll-off) and cuts what a
    telephone or laptop microphone does not pass (7.9 kHz, 30 Hz); with both shares 0 the audio is untouched."""
    torch = pytest.importorskip("torch")
    from train_demo_model import SR, room_and_mic

    t = torch.arange(SR) / SR
    rng = np.random.default_rng(3)
    assert torch.equal(room_and_mic(torch.sin(2 * np.pi * 1000 * t)[None], None, rng, 0.0, 0.0),
                       torch.sin(2 * np.pi * 1000 * t)[None])
    burst = torch.zeros(1, 2 * SR)
    burst[0, :SR // 10] = torch.randn(SR // 10)
    wet = room_and_mic(burst, None, rng, 1.0, 0.0)[0]
    tail = wet[SR // 10 + SR // 50:SR // 10 + SR // 5].pow(2).mean()  # 20-200 ms after the burst
    late = wet[SR + SR // 2:].pow(2).mean()  # > 1.4 s after: past the longest RT60
    assert tail > 1e-5 and late < tail * 1e-2
    x = torch.stack([torch.sin(2 * np.pi * f * t) for f in (1000, 7900, 30)]).repeat(20, 1)
    y = room_and_mic(x, None, rng, 0.0, 1.0)  # each row its own microphone
    mid = slice(SR // 4, 3 * SR // 4)
    gain = (y[:, mid].pow(2).mean(1) / x[:, mid].pow(2).mean(1)).sqrt().reshape(20, 3)
    assert bool(((gain[:, 0] > 0.3) & (gain[:, 0] < 2.5)).all()), gain[:, 0]
    assert float(gain[:, 1].median()) < 0.25 and float(gain[:, 2].max()) < 0.15, gain


def test_training_engines_other_than_the_training_ones_are_refused(capsys):
    """--engines: espeak, festival and piper only; flite is the held-out engine and cannot be trained on."""
    from train_demo_model import main

    with pytest.raises(SystemExit) as e:
        main(["--engines", "espeak=0.5", "flite=0.5"])
    assert e.value.code == 2 and "flite is the held-out engine" in capsys.readouterr().err
