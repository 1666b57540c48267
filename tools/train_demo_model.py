#!/usr/bin/env python3
"""Train the small demo wav2vec2 CTC model on espeak-ng speech (see tools/README.md).

Pipeline: text corpus (tools/demo_corpus.py) -> espeak-ng in worker processes (many voices,
variants, speeds, pitches; 16 kHz via soxr) -> in-memory pool of clips -> batches by total
audio length with random leading/trailing silence, gain and noise -> Wav2Vec2ForCTC trained
from scratch with CTC -> complete Hugging Face folder (model + processor).

The pool is generated deterministically from --seed (clip i always gets the same text, voice
and settings).  With --stream-data (the default on a GPU) generation continues in the
background while training and new clips replace old ones in a bounded pool; that gives more
variety but the exact mix depends on machine speed; --stream-ratio paces that generation to the
audio trained, for a CPU whose cores training needs.  With --no-stream-data and --max-steps the
run is deterministic on CPU.

Example (CPU, small):  python tools/train_demo_model.py --device cpu --pool-hours 0.3 --max-minutes 3
"""
from __future__ import annotations

import argparse
import atexit
import json
import math
import multiprocessing as mp
import os
import platform
import random
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_voices as dv  # noqa: E402

import demo_corpus as dc  # noqa: E402

SR = dc.SAMPLE_RATE
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFEST = ROOT / "tools" / "demo_heldout_manifest.tsv"
STATE_FILE = "trainer_state.pt"  # in the <out>_latest checkpoint folder

# ----------------------------------------------------------------- data generation
_G: dict = {}


SPEED_WPM = (110, 240, 170)  # espeak-ng words per minute: triangular (low, high, mode)
PITCH = (15, 85)  # espeak-ng pitch, uniform


def _init_worker(corpus_dir: str, exclude: set, seed: int, speed_wpm=SPEED_WPM, pitch=PITCH,
                 engines: dict | None = None, speed_perturb: float = 0.0):
    rows = [r for r in dc.read_corpus(Path(corpus_dir) / "train.tsv") if dc.label_of(r[1]) not in exclude]
    by_src: dict[str, list[str]] = {}
    for src, t in rows:
        by_src.setdefault(src, []).append(t)
    _G["by_src"] = by_src
    _G["all"] = [t for _, t in rows]
    _G["words"] = dc.wordlist_for_random()
    _G["seed"] = seed
    _G["speed_wpm"], _G["pitch"] = tuple(speed_wpm), tuple(pitch)
    _G["engines"] = dict(engines or {"espeak": 1.0})
    _G["speed_perturb"] = speed_perturb


SOURCE_WEIGHTS = {"fortunes": 0.40, "man": 0.20, "licences": 0.05, "docs": 0.05,
                  "random": 0.12, "span": 0.18}
NONSPEECH_P = 0.05
MAX_CLIP_S = 16.0


def make_clip(i: int):
    """Clip number i of the stream: (int16 audio, label) or None. Deterministic in (seed, i)."""
    rng = random.Random(_G["seed"] * 1_000_003 + i)
    if rng.random() < NONSPEECH_P:
        nrng = np.random.default_rng(rng.randrange(2 ** 32))
        x = dc.nonspeech(nrng, rng.uniform(0.5, 8.0))
        return (np.clip(x * 32767, -32768, 32767).astype(np.int16), "")
    src = rng.choices(list(SOURCE_WEIGHTS), weights=list(SOURCE_WEIGHTS.values()))[0]
    if src == "random":
        text = dc.random_word_sentence(rng, _G["words"])
    elif src == "span":
        words = dc.label_of(rng.choice(_G["all"])).lower().split()
        n = rng.randint(1, 5)
        s = rng.randint(0, max(0, len(words) - n))
        text = " ".join(words[s:s + n])
    else:
        pool = _G["by_src"].get(src) or _G["all"]
        text = rng.choice(pool)
    engines = _G["engines"]
    # (the espeak-only mix draws no engine, so the committed recipe's clips stay exactly as they were)
    engine = "espeak" if list(engines) == ["espeak"] else rng.choices(list(engines), weights=list(engines.values()))[0]
    try:
        if engine == "festival":  # v2: Debian festival voices (tools/demo_voices.py)
            x = dv.festival(text, rng.choice(dv.FESTIVAL_VOICES), rng.uniform(0.8, 1.3))
        elif engine == "piper":  # v2: the piper en_US joe voice
            x = dv.piper(text, rng.uniform(0.75, 1.35), rng.uniform(0.4, 0.9), rng.uniform(0.5, 1.0))
        else:
            voice = rng.choice(dc.TRAIN_ACCENTS)
            var = rng.choice(dc.TRAIN_VARIANTS)
            if var:
                voice += "+" + var
            speed = int(rng.triangular(*_G["speed_wpm"]))
            pitch = rng.randint(*_G["pitch"])
            gap = 0 if rng.random() < 0.8 else rng.randint(1, 4)
            x = dc.espeak(text, voice, speed, pitch, gap)
    except Exception as e:  # pragma: no cover - synthesis failure on odd text
        print(f"{engine} failed on {text!r}: {e}", file=sys.stderr)
        return None
    if _G["speed_perturb"] and rng.random() < _G["speed_perturb"]:  # tempo and pitch together
        x = dv.speed_perturb(x, rng.uniform(0.85, 1.15))
    if len(x) > MAX_CLIP_S * SR or len(x) < 0.2 * SR:
        return None
    peak = float(np.abs(x).max()) + 1e-9
    x = x / peak * 0.9
    return (np.clip(x * 32767, -32768, 32767).astype(np.int16), dc.label_of(text))


def _render_dev(item):
    return dc.render_item(item)


# ------------------------------------------------------------------- model setup
def regularisation(args) -> dict:
    """Dropout and SpecAugment settings, for a new config and over an --init-from one alike."""
    return dict(hidden_dropout=args.dropout, attention_dropout=args.dropout, activation_dropout=args.dropout,
                feat_proj_dropout=args.dropout, mask_time_prob=args.mask_time_prob)


def build_model(args):
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC
    cfg = Wav2Vec2Config(
        vocab_size=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=args.ff,
        conv_dim=tuple(args.conv_dim), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_bias=True,
        feat_extract_norm=args.feat_extract_norm, do_stable_layer_norm=args.stable_layer_norm,
        num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=16,
        **regularisation(args), final_dropout=0.0, layerdrop=0.0, mask_time_length=5, mask_feature_prob=0.0,
        ctc_loss_reduction="mean", ctc_zero_infinity=True,
    )
    return Wav2Vec2ForCTC(cfg)


def save_folder(model, out: Path, info: dict, fp16: bool = False, trainer_state: dict | None = None):
    """Write a complete HF folder atomically (model, vocab, tokenizer, feature extractor); with
    trainer_state, also trainer_state.pt (exact weights, optimizer, step, clock, RNG states: --resume)."""
    import torch
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / "vocab.json").write_text(json.dumps(dc.VOCAB))
    tok = Wav2Vec2CTCTokenizer(str(tmp / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                               bos_token="<s>", eos_token="</s>", word_delimiter_token="|",
                               do_lower_case=False)
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0,
                                  do_normalize=True, return_attention_mask=True)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(str(tmp))
    fe.save_pretrained(str(tmp))  # preprocessor_config.json (read by transformers 4.x)
    (tmp / "vocab.json").write_text(json.dumps(dc.VOCAB))
    (tmp / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}))
    m = model
    if fp16:
        import copy
        m = copy.deepcopy(model).to("cpu").half()
    else:
        m = copy_to_cpu_fp32(model)
    with torch.no_grad():  # ids 1-3 (<s>, </s>, <unk>) never occur in training targets: never emit them
        m.lm_head.bias[1:4] = -30.0
    m.save_pretrained(str(tmp), safe_serialization=True)
    if fp16:  # load back as float32 by default
        cfg = json.loads((tmp / "config.json").read_text())
        cfg["dtype"] = "float32"
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    (tmp / "training_info.json").write_text(json.dumps(info, indent=1))
    if trainer_state is not None:
        torch.save(trainer_state, tmp / STATE_FILE)
    prev = set_aside(out)  # a kill at any moment leaves out or its set-aside copy complete
    if out.exists():
        if prev.exists():
            shutil.rmtree(prev)
        out.rename(prev)
    tmp.rename(out)
    if prev.exists():
        shutil.rmtree(prev)


def native_bf16(device_type: str, flags: str, cuda_bf16: bool = False) -> bool:
    """Whether bf16 autocast pays on this device: on CUDA when the GPU supports bf16; on a CPU only with
    native bf16 instructions (avx512_bf16 or AMX in its flags), where it is ~1.5x faster than fp32. A CPU
    without them (AVX2, as on most desktops) emulates bf16: about 5x slower than fp32 (a 2-core AVX2 EPYC,
    1 thread, the demo architecture: 12 s per step in bf16, 2-3 s in fp32)."""
    if device_type == "cuda":
        return cuda_bf16
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def cpu_flags() -> str:
    """The CPU's feature flags ('' where /proc/cpuinfo does not exist, as on macOS and Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith(("flags", "Features"))), "")


def set_aside(out: Path) -> Path:
    """Where save_folder keeps the previous folder while it moves the new one in."""
    return out.with_name(out.name + ".old")


def copy_to_cpu_fp32(model):
    import copy
    return copy.deepcopy(model).to("cpu").float()


class StreamGate:
    """The clip indices handed to the espeak workers (the input of pool.imap): never more than `lead` clips
    ahead of the clips taken, and when paced (--stream-ratio) no further than the limit that training sets.
    Unbounded, pool.imap's task thread runs as far ahead as the pipe takes and the workers generate flat out,
    which on a 2-core CPU takes the cores from training. Close it before pool.terminate(), which waits for
    that thread."""

    def __init__(self, start: int, lead: int):
        self.cond = threading.Condition()
        self.taken = start  # index of the next clip the consumer takes
        self.lead = lead
        self.limit: int | None = None  # no index at or past it is handed out (None: not paced)
        self.closed = False

    def _open(self, i: int) -> bool:
        return self.closed or i < min(self.taken + self.lead, self.limit if self.limit is not None else i + 1)

    def indices(self):
        i = self.taken
        while True:
            with self.cond:
                self.cond.wait_for(lambda i=i: self._open(i))
                if self.closed:
                    return
            yield i
            i += 1

    def took(self):
        with self.cond:
            self.taken += 1
            self.cond.notify_all()

    def pace(self, limit: int):
        with self.cond:
            self.limit = limit
            self.cond.notify_all()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify_all()


# --------------------------------------------------------------------- batching
class Pool:
    """Clips on the training device, bucketed by length, with bounded size."""

    def __init__(self, device, max_seconds: float, seed: int):
        self.device = device
        self.audio: list = []
        self.labels: list = []
        self.lens: list[int] = []
        self.max_samples = int(max_seconds * SR)
        self.total = 0
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.added = 0

    def add(self, x: np.ndarray, label: str):
        import torch
        t = torch.from_numpy(x).to(self.device)
        ids = [dc.VOCAB[c] for c in label.replace(" ", "|")]
        with self.lock:
            self.added += 1
            if self.total + len(x) > self.max_samples and self.audio:
                j = self.rng.randrange(len(self.audio))
                self.total -= self.lens[j]
                self.audio[j], self.labels[j], self.lens[j] = t, ids, len(x)
            else:
                self.audio.append(t)
                self.labels.append(ids)
                self.lens.append(len(x))
            self.total += len(x)

    def hours(self):
        return self.total / SR / 3600

    def sample_batch(self, rng: random.Random, budget_samples: int, max_anchor_samples: int = 0):
        """A batch of clips of similar length; with max_anchor_samples, of clips about that long or shorter
        (the anchor is drawn among those: a short-utterance curriculum)."""
        with self.lock:
            n = len(self.audio)
            anchor = rng.randrange(n)
            for _ in range(256 if max_anchor_samples else 0):
                if self.lens[anchor] <= max_anchor_samples:
                    break
                anchor = rng.randrange(n)
            target = self.lens[anchor]
            # candidates of similar length: sample some, keep those within 25%
            idx = [anchor]
            cand = [rng.randrange(n) for _ in range(512)]
            cand.sort(key=lambda j: abs(self.lens[j] - target))
            maxlen = target
            for j in cand:
                L = max(maxlen, self.lens[j])
                if (len(idx) + 1) * (L + SR) > budget_samples:
                    break
                idx.append(j)
                maxlen = L
            return [self.audio[j] for j in idx], [self.labels[j] for j in idx]


def concat_pairs(clips, labels, rng: np.random.Generator, gap_s=(0.3, 2.0)):
    """Multi-sentence clips (v2): join the batch's clips in pairs with 0.3-2 s of silence between them, the
    labels with a word boundary, so that whole-recording decoding of dictation is in the training
    distribution. The batch keeps about its audio budget (half the clips, twice as long)."""
    import torch
    out_c, out_l = [], []
    for k in range(0, len(clips) - 1, 2):
        gap = torch.zeros(int(rng.uniform(*gap_s) * SR), dtype=clips[k].dtype, device=clips[k].device)
        out_c.append(torch.cat([clips[k], gap, clips[k + 1]]))
        a, b = labels[k], labels[k + 1]
        out_l.append(a + [dc.VOCAB["|"]] + b if a and b else a or b)
    if len(clips) % 2:
        out_c.append(clips[-1])
        out_l.append(labels[-1])
    return out_c, out_l


def room_and_mic(x, tot, rng: np.random.Generator, reverb_p: float, band_p: float):
    """Reverberation from a synthetic room impulse response (direct path, a few early reflections, an
    exponentially decaying diffuse tail; RT60 0.15-0.9 s, direct-to-reverberant ratio -3..+12 dB) for
    reverb_p of the clips, and a microphone response for band_p of them (high-pass 60-300 Hz, low-pass
    3.4-7.5 kHz: telephone to laptop, a random smooth spectral tilt/EQ of +-6 dB). One FFT per batch."""
    import torch
    B, T = x.shape
    n_rir = int(0.9 * SR)
    nfft = 1 << int(math.ceil(math.log2(T + n_rir)))
    H = torch.ones(B, nfft // 2 + 1, dtype=torch.complex64, device=x.device)
    f = torch.fft.rfftfreq(nfft, 1 / SR).to(x.device)
    any_ = False
    for b in range(B):
        if rng.random() < reverb_p:
            rt60 = rng.uniform(0.15, 0.9)
            n = int(rt60 * SR)
            t = np.arange(n) / SR
            h = rng.standard_normal(n) * np.exp(-6.908 * t / rt60)
            h[:int(0.002 * SR)] = 0
            for _ in range(rng.integers(2, 7)):  # early reflections, 2-40 ms
                h[rng.integers(int(0.002 * SR), int(0.04 * SR))] += rng.uniform(-0.6, 0.6) * np.sqrt(np.sum(h ** 2))
            drr = 10 ** (rng.uniform(-3, 12) / 10)
            h = h / np.sqrt(np.sum(h ** 2) * drr)
            h[0] = 1.0
            H[b] = torch.fft.rfft(torch.from_numpy(h).float().to(x.device), nfft)
            any_ = True
        if rng.random() < band_p:
            hp, lp = rng.uniform(60, 300), rng.uniform(3400, 7500)
            g = 1 / (1 + (hp / f.clamp(min=1)) ** 4) / (1 + (f / lp) ** 8)  # 4th / 8th order magnitude responses
            knots = torch.from_numpy(rng.uniform(-6, 6, 6)).float().to(x.device)
            pos = f / (SR / 2) * (len(knots) - 1)
            i0 = pos.floor().long().clamp(max=len(knots) - 2)
            eq_db = knots[i0] + (knots[i0 + 1] - knots[i0]) * (pos - i0)
            H[b] = H[b] * (g * 10 ** (eq_db / 20))
            any_ = True
    if not any_:
        return x
    y = torch.fft.irfft(torch.fft.rfft(x, nfft) * H, nfft)[:, :T]
    return y


def make_batch(clips, labels, rng: np.random.Generator, device, augment=True, snr_db=(5.0, 45.0),
               room: tuple[float, float] = (0.0, 0.0), max_pad_s: float = 0.5):
    """Pad with random silence, (v2) reverberate and band-limit (room: reverb_p, band_p), add gain and noise
    (SNR uniform in snr_db for 80% of clips), normalise like Wav2Vec2FeatureExtractor."""
    import torch
    B = len(clips)
    lead = rng.integers(0, int(max_pad_s * SR) + 1, B) if augment else np.zeros(B, int)
    trail = rng.integers(0, int(max_pad_s * SR) + 1, B) if augment else np.zeros(B, int)
    lens = np.array([len(c) for c in clips])
    tot = lead + lens + trail
    T = int(tot.max())
    x = torch.zeros(B, T, device=device)
    for b, c in enumerate(clips):
        x[b, lead[b]:lead[b] + lens[b]] = c
    x = x / 32768.0
    tot_t = torch.from_numpy(tot).to(device)
    mask = (torch.arange(T, device=device)[None, :] < tot_t[:, None]).long()
    if augment and (room[0] or room[1]):
        x = room_and_mic(x, tot, rng, *room)
    speech_rms = (x.pow(2).sum(1) / torch.from_numpy(lens).float().to(device).clamp(min=1)).sqrt() + 1e-4
    if augment:
        snr = torch.from_numpy(rng.uniform(snr_db[0], snr_db[1], B)).float().to(device)
        use = torch.from_numpy(rng.random(B) < 0.8).float().to(device)
        noise = torch.randn(B, T, device=device)
        # some brown-ish (low-pass) noise
        lp = torch.from_numpy(rng.random(B) < 0.3).to(device)
        if bool(lp.any()):
            k = torch.ones(1, 1, 9, device=device) / 3.0
            noise_lp = torch.nn.functional.conv1d(noise[:, None], k, padding=4)[:, 0]
            noise = torch.where(lp[:, None], noise_lp, noise)
        scale = speech_rms * 10 ** (-snr / 20) * use
        x = x + noise * scale[:, None]
        gain = torch.from_numpy(10 ** (rng.uniform(-25, 5, B) / 20)).float().to(device)
        x = x * gain[:, None]
    x = x * mask
    n = mask.sum(1, keepdim=True).clamp(min=1)
    mean = x.sum(1, keepdim=True) / n
    var = ((x - mean) * mask).pow(2).sum(1, keepdim=True) / n
    x = (x - mean) / torch.sqrt(var + 1e-7) * mask
    make_batch.last_samples = int(tot.sum())
    L = max(1, max(len(lb) for lb in labels))
    y = torch.full((B, L), -100, dtype=torch.long)
    for b, lb in enumerate(labels):
        if lb:
            y[b, :len(lb)] = torch.tensor(lb)
    return x, mask, y.to(device)


# ------------------------------------------------------------------ evaluation
def greedy_decode(logits, frames=None):
    """Greedy CTC text per row; `frames` (per row) cuts each row to its clip's own frames, leaving out
    those computed for the batch's zero padding (they would add stray letters after the last word)."""
    inv = {v: k for k, v in dc.VOCAB.items()}
    ids = logits.argmax(-1).cpu().numpy()
    out = []
    for b, row in enumerate(ids):
        if frames is not None:
            row = row[:int(frames[b])]
        prev, chars = -1, []
        for t in row:
            if t != prev and t > 4:
                chars.append(inv[int(t)])
            elif t != prev and t == 4:
                chars.append(" ")
            prev = t
        out.append(" ".join("".join(chars).split()))
    return out


def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer_wer(refs, hyps):
    ce = sum(edit_distance(r, h) for r, h in zip(refs, hyps))
    cn = sum(len(r) for r in refs)
    we = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps))
    wn = sum(len(r.split()) for r in refs)
    return ce / max(1, cn), we / max(1, wn)


def evaluate(model, dev, device, amp_dtype=None):
    """dev: list of (group, float32 audio, ref).  Returns {group: (cer, wer)}."""
    import torch
    model.eval()
    res: dict[str, tuple[list, list]] = {}
    with torch.no_grad():
        for k in range(0, len(dev), 16):
            chunk = dev[k:k + 16]
            clips = [torch.from_numpy(np.clip(a * 32768, -32768, 32767).astype(np.int16)) for _, a, _ in chunk]
            x, mask, _ = make_batch(clips, [[] for _ in chunk], None, device, augment=False)
            ctx = torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype else _null()
            with ctx:
                logits = model(x, attention_mask=mask).logits.float()
            hyps = greedy_decode(logits, model._get_feat_extract_output_lengths(mask.sum(-1)))
            for (g, _, ref), h in zip(chunk, hyps):
                res.setdefault(g, ([], []))
                res[g][0].append(ref)
                res[g][1].append(h)
    model.train()
    return {g: cer_wer(r, h) for g, (r, h) in res.items()}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus-dir", default="build/demo_corpus", help="built if missing")
    ap.add_argument("--out", default="build/demo_model", help="output HF folder (final)")
    ap.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="held-out manifest (excluded from training)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0, help="espeak worker processes (0: cores-1)")
    ap.add_argument("--pool-hours", type=float, default=40.0, help="audio generated before training")
    ap.add_argument("--gen-max-minutes", type=float, default=3.0, help="cap on the initial generation time")
    ap.add_argument("--stream-data", action=argparse.BooleanOptionalAction, default=None,
                    help="keep generating during training (default: on for cuda)")
    ap.add_argument("--stream-ratio", type=float, default=0.0, metavar="R",
                    help="stream data (implies --stream-data), generating new clips only as fast as R s of audio per "
                         "s of audio trained "
                         "(R=1: as much new audio as training takes, about 7%% of a 2-core CPU; 0: as fast as the "
                         "workers go, which suits a GPU machine but takes the cores from training on a CPU)")
    ap.add_argument("--pool-max-hours", type=float, default=150.0,
                    help="bound on the pool (int16 audio, 115 MB per hour); new clips then replace random ones")
    ap.add_argument("--max-minutes", type=float, default=20.0, help="training wall-clock budget")
    ap.add_argument("--max-steps", type=int, default=0, help="if >0, schedule by steps instead of time")
    ap.add_argument("--stop-after-min", type=float, default=0.0, metavar="MIN",
                    help="stop (and save to --out) after MIN minutes of training although the LR schedule is laid "
                         "over --max-minutes / --max-steps: how phases 1 and 3 of the committed model ended "
                         "(stopped at 45 of 80 and 101 of 125 minutes); see tools/train_chain.sh")
    ap.add_argument("--stop-after-steps", type=int, default=0, metavar="N",
                    help="stop (and save) after N steps although the LR schedule goes on; --resume continues")
    ap.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False,
                    help="continue from <out>_latest/trainer_state.pt (weights, optimizer, step, elapsed training "
                         "time, RNG states; the fixed pool is regenerated clip for clip) when it exists, else start "
                         "afresh: an interrupted or stopped run goes on where its last checkpoint left it (with "
                         "--max-steps and --no-stream-data on one thread, exactly as if never interrupted)")
    ap.add_argument("--batch-seconds", type=float, default=0, help="padded audio per batch (0: 800 cuda / 160 cpu)")
    ap.add_argument("--lr", type=float, default=0, help="peak LR (0: 2e-3 cuda / 1.5e-3 cpu)")
    ap.add_argument("--warmup-steps", type=int, default=0, help="0: 400 cuda / 150 cpu")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ff", type=int, default=1024)
    ap.add_argument("--feat-extract-norm", choices=["layer", "group"], default="layer",
                    help="feature encoder normalisation: layer (every conv layer, per frame across channels, as "
                         "large-lv60) or group (first conv layer only, per channel over time, as base-960h)")
    ap.add_argument("--stable-layer-norm", action=argparse.BooleanOptionalAction, default=True,
                    help="pre-LN transformer (do_stable_layer_norm, as large-lv60); --no-stable-layer-norm: post-LN")
    ap.add_argument("--conv-dim", type=int, nargs=7, default=[32, 64, 128, 128, 128, 128, 256])
    ap.add_argument("--dropout", type=float, default=0.05,
                    help="dropout of the transformer (also applied over an --init-from config)")
    ap.add_argument("--mask-time-prob", type=float, default=0.05,
                    help="SpecAugment time masking (also applied over an --init-from config)")
    ap.add_argument("--speed-wpm", type=int, nargs=3, default=list(SPEED_WPM), metavar=("LOW", "HIGH", "MODE"),
                    help="espeak-ng speaking rate of the training clips, triangular (the manifests use "
                         "%d-%d)" % dc.MANIFEST_SPEED_WPM)
    ap.add_argument("--pitch", type=int, nargs=2, default=list(PITCH), metavar=("LOW", "HIGH"),
                    help="espeak-ng pitch of the training clips, uniform (the manifests use %d-%d)" % dc.MANIFEST_PITCH)
    ap.add_argument("--snr-db", type=float, nargs=2, default=[5.0, 45.0], metavar=("MIN", "MAX"),
                    help="range of the additive-noise SNR augmentation")
    ap.add_argument("--engines", nargs="+", default=["espeak=1"], metavar="ENGINE=WEIGHT",
                    help="synthesis engines and their shares of the clips: espeak, festival, piper "
                         "(tools/demo_voices.py; v2: espeak=0.45 festival=0.3 piper=0.25; flite is held out)")
    ap.add_argument("--speed-perturb", type=float, default=0.0, metavar="P",
                    help="v2: resample P of the clips to 0.85-1.15x speed (tempo and pitch)")
    ap.add_argument("--reverb-p", type=float, default=0.0, help="v2: share of clips reverberated (synthetic rooms)")
    ap.add_argument("--band-p", type=float, default=0.0,
                    help="v2: share of clips band-limited / coloured like a telephone or laptop microphone")
    ap.add_argument("--concat-p", type=float, default=0.0,
                    help="v2: share of batches whose clips are joined in pairs with 0.3-2 s silences")
    ap.add_argument("--max-pad-s", type=float, default=0.5, help="random leading / trailing silence per clip")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast (default: where the device runs bf16 natively: a GPU with bf16, a CPU with "
                         "avx512_bf16 or AMX, ~1.5x faster there; elsewhere fp32, as emulated bf16 is ~5x slower)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    ap.add_argument("--ckpt-every-min", type=float, default=3.0)
    ap.add_argument("--eval-every-min", type=float, default=2.0)
    ap.add_argument("--dev-per-group", type=int, default=48)
    ap.add_argument("--final-eval", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--init-from", default="", help="start from this HF folder instead of random weights")
    ap.add_argument("--freeze-feature-encoder", action="store_true",
                    help="train only the transformer and CTC head (with --init-from: ~1.6x faster steps on CPU, "
                         "as the convolutional front end's backward pass is skipped)")
    ap.add_argument("--freeze-feature-encoder-after-min", type=float, default=0.0, metavar="MIN",
                    help="freeze the feature encoder once MIN minutes of training have passed (a run from random "
                         "weights: the front end learns first, then the rest of the run takes the faster steps; "
                         "wall clock, also with --max-steps; --freeze-feature-encoder-after-steps is the same by "
                         "steps, so it acts at the same point on any machine)")
    ap.add_argument("--freeze-feature-encoder-after-steps", type=int, default=0, metavar="N",
                    help="freeze the feature encoder once N steps are done (as --freeze-feature-encoder-after-min)")
    ap.add_argument("--short-first-min", type=float, default=0.0, metavar="MIN",
                    help="for the first MIN minutes train on short clips only (see --short-max-s): CTC from random "
                         "weights leaves its all-blank plateau sooner on short utterances (SortaGrad-like); wall "
                         "clock, also with --max-steps; --short-first-steps is the same by steps)")
    ap.add_argument("--short-first-steps", type=int, default=0, metavar="N",
                    help="for the first N steps train on short clips only (as --short-first-min)")
    ap.add_argument("--short-max-s", type=float, default=2.5,
                    help="clip length limit of --short-first-min / --short-first-steps")
    ap.add_argument("--bundle", nargs=2, metavar=("SRC", "DST"),
                    help="only convert a trained folder SRC to the fp16 bundle DST, then exit")
    ap.add_argument("--bundle-fp32", action="store_true", help="with --bundle: keep fp32 weights")
    args = ap.parse_args(argv)
    for what in ("freeze-feature-encoder-after", "short-first"):
        a = what.replace("-", "_")
        if getattr(args, a + "_min") and getattr(args, a + "_steps"):
            ap.error(f"--{what}-min and --{what}-steps both given: use one of them")
    lo, hi, mode = args.speed_wpm
    if not 80 <= lo <= mode <= hi:
        ap.error("--speed-wpm needs 80 <= LOW <= MODE <= HIGH (espeak-ng speaks no slower than 80 words a minute)")
    if not 0 <= args.pitch[0] <= args.pitch[1] <= 99:
        ap.error("--pitch needs 0 <= LOW <= HIGH <= 99 (espeak-ng's pitch scale)")
    if args.stream_ratio < 0 or args.stream_ratio and args.stream_data is False:
        ap.error("--stream-ratio needs a ratio >= 0 and streamed data (it implies --stream-data; drop "
                 "--no-stream-data)")

    try:
        engines = {k: float(v) for k, v in (e.split("=") for e in args.engines)}
    except ValueError:
        ap.error("--engines takes ENGINE=WEIGHT items, e.g. espeak=0.5 festival=0.3 piper=0.2")
    if not set(engines) <= {"espeak", "festival", "piper"}:
        ap.error("--engines: known engines are espeak, festival and piper (flite is the held-out engine)")

    if args.bundle:
        from transformers import Wav2Vec2ForCTC
        src, dst = args.bundle
        info_path = Path(src) / "training_info.json"
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        save_folder(Wav2Vec2ForCTC.from_pretrained(src), Path(dst), info, fp16=not args.bundle_fp32)
        print(f"wrote {dst}")
        return

    t_start = time.time()
    random.seed(args.seed)
    np.random.seed(args.seed)
    corpus = Path(args.corpus_dir)
    if not (corpus / "train.tsv").exists():
        print("building corpus ...", flush=True)
        print(json.dumps(dc.build_corpus(corpus, args.seed)), flush=True)
    manifest = dc.read_manifest(Path(args.manifest)) if Path(args.manifest).exists() else []
    everyday = Path(__file__).resolve().parent / "demo_everyday_manifest.tsv"  # a second check set:
    checks = manifest + (dc.read_manifest(everyday) if everyday.exists() else [])  # kept out, never dev
    exclude = {dc.label_of(it["text"]) for it in checks}
    heldout_labels = {dc.label_of(t) for _, t in dc.read_corpus(corpus / "heldout.tsv")}
    exclude |= heldout_labels

    import torch
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dev_name = args.device
    if dev_name == "auto":
        dev_name = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = dev_name == "cuda"
    stream = args.stream_data if args.stream_data is not None else cuda or bool(args.stream_ratio)
    batch_seconds = args.batch_seconds or (800.0 if cuda else 160.0)
    lr_peak = args.lr or (2e-3 if cuda else 1.5e-3)
    warmup = args.warmup_steps or (400 if cuda else 150)
    workers = args.workers or max(1, (os.cpu_count() or 2) - 1)

    out = Path(args.out)
    ckpt = out.with_name(out.name + "_latest")
    state = None
    prev = set_aside(ckpt)
    if args.resume and not ckpt.exists() and (prev / STATE_FILE).exists():
        prev.rename(ckpt)  # the run was killed while it replaced its checkpoint
    if args.resume and (ckpt / STATE_FILE).exists():
        state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
        print(f"resuming from {ckpt} at step {state['step']} ({state['elapsed_s'] / 60:.1f} min of training)",
              flush=True)
    elif args.resume:
        print(f"--resume: no {ckpt / STATE_FILE}, starting afresh", flush=True)

    # ---- generate (fork the workers before CUDA is initialised)
    ctx = mp.get_context("fork")
    pool = ctx.Pool(workers, initializer=_init_worker,
                    initargs=(str(corpus), exclude, args.seed, args.speed_wpm, args.pitch, engines,
                              args.speed_perturb))
    dev_items = [it for g in ("seen_voices", "heldout_voice")
                 for it in [m for m in manifest if m["group"] == g][:args.dev_per_group]]
    dev_audio = pool.map(_render_dev, dev_items, chunksize=4)
    dev = [(it["group"], a, dc.label_of(it["text"])) for it, a in zip(dev_items, dev_audio)]

    device = torch.device(dev_name)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    torch.manual_seed(args.seed)
    data = Pool(device, args.pool_max_hours * 3600, args.seed)
    # with a fixed pool a resumed run regenerates exactly the clips of the first; a streaming one goes on
    # with clips it has not seen (the streamed mix itself cannot be rebuilt)
    first_clip = state["clips_consumed"] if state and stream else 0
    chunk = 16
    gate = StreamGate(first_clip, lead=4 * chunk * workers)
    atexit.register(gate.close)  # runs before multiprocessing's own exit handler, which terminates the pool
    it_clips = pool.imap(make_clip, gate.indices(), chunksize=chunk)
    t0 = time.time()
    n_pool = state["pool_clips"] if state and not stream else 0
    while (gate.taken < n_pool if n_pool else
           data.hours() < args.pool_hours and time.time() - t0 < args.gen_max_minutes * 60):
        r = next(it_clips)
        gate.took()  # counts the items taken from the clip stream (non-speech and failed ones included)
        if r is not None:
            data.add(*r)
    pool_clips = gate.taken - first_clip
    gen_s = time.time() - t0
    print(f"generated {len(data.audio)} clips, {data.hours():.2f} h of audio in {gen_s:.0f} s "
          f"with {workers} workers ({data.hours() * 3600 / gen_s:.0f} s audio/s)", flush=True)
    stop = threading.Event()

    def _feeder():
        for r in it_clips:
            if stop.is_set():
                break
            gate.took()
            if r is not None:
                data.add(*r)

    # --stream-ratio: clip indices the workers may reach, from the audio trained since this point
    pace_from = (gate.taken, len(data.audio) and data.total / SR / max(1, pool_clips))  # (index, s per clip)
    if stream and args.stream_ratio:
        gate.pace(pace_from[0] + gate.lead)
    feeder = None
    if stream:
        feeder = threading.Thread(target=_feeder, daemon=True)
        feeder.start()
    else:
        gate.close()
        pool.terminate()

    # ---- model
    prev_info = {}
    if args.init_from:  # continue from a saved folder (new optimizer state and LR schedule)
        from transformers import Wav2Vec2ForCTC
        model = Wav2Vec2ForCTC.from_pretrained(args.init_from, **regularisation(args)).float().to(device)
        pi = Path(args.init_from) / "training_info.json"
        prev_info = json.loads(pi.read_text()) if pi.exists() else {}
    else:
        model = build_model(args).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters", flush=True)
    if args.freeze_feature_encoder:
        model.freeze_feature_encoder()
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"feature encoder frozen: training {n_train / 1e6:.2f} M parameters", flush=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr_peak, betas=(0.9, 0.98), eps=1e-6,
                            weight_decay=0.01)
    if args.amp is None:
        args.amp = native_bf16(device.type, cpu_flags(), cuda and torch.cuda.is_bf16_supported())
    amp = torch.bfloat16 if args.amp else None
    print(f"precision: {'bf16 autocast' if amp else 'fp32'}", flush=True)
    rng = random.Random(args.seed + 1)
    nrng = np.random.default_rng(args.seed + 2)
    budget = int(batch_seconds * SR)
    info = {"params": n_params, "device": dev_name, "args": vars(args), "host": platform.node(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            # the architecture actually trained (under --init-from it comes from that folder, not from args)
            "architecture": {k: getattr(model.config, k) for k in (
                "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "conv_dim",
                "feat_extract_norm", "do_stable_layer_norm")}}
    import transformers
    info["transformers"] = transformers.__version__
    if prev_info:
        info["previous_phase"] = prev_info
    t_train = time.time()
    budget_s = args.max_minutes * 60
    step, audio_s, last_log, last_ckpt, last_eval = 0, 0.0, t_train, t_train, t_train
    losses: list[float] = []
    history = []
    model.train()
    frozen = args.freeze_feature_encoder
    if state:
        same_run = ("resume", "stop_after_min", "stop_after_steps", "eval_every_min", "ckpt_every_min", "final_eval")
        changed = {k: (v, vars(args).get(k)) for k, v in state["info"]["args"].items()
                   if k not in same_run and vars(args).get(k) != v}
        if changed:
            print("--resume: arguments differ from the checkpoint's run: " + ", ".join(
                f"--{k.replace('_', '-')} {a} -> {b}" for k, (a, b) in changed.items()), flush=True)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError:
            raise SystemExit(f"--resume: {ckpt} holds a model of another shape than these arguments build; "
                             "use another --out, or drop --resume to start afresh") from None
        if state["frozen"] and not frozen:
            model.freeze_feature_encoder()
            frozen = True
        opt.load_state_dict(state["optimizer"])
        step, audio_s, history = state["step"], state["audio_s"], state["history"]
        rng.setstate(state["rng"])
        nrng.bit_generator.state = state["nrng"]
        np.random.set_state(state["np_global"])  # SpecAugment masks are drawn from numpy's global RNG
        torch.set_rng_state(state["torch_rng"])
        data.rng.setstate(state["pool_rng"])
        info.update({k: state["info"][k] for k in ("feature_encoder_frozen_at",) if k in state["info"]})
        info["resumed"] = state["info"].get("resumed", []) + [
            {"step": step, "minutes": state["elapsed_s"] / 60, "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                    time.gmtime())}]
        t_train = time.time() - state["elapsed_s"]

    def trainer_state():
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "audio_s": audio_s,
                "elapsed_s": time.time() - t_train, "history": history, "frozen": frozen,
                "rng": rng.getstate(), "nrng": nrng.bit_generator.state, "np_global": np.random.get_state(),
                "torch_rng": torch.get_rng_state(), "pool_rng": data.rng.getstate(),
                "pool_clips": pool_clips, "clips_consumed": gate.taken, "info": dict(info)}

    freeze_min, freeze_steps = args.freeze_feature_encoder_after_min, args.freeze_feature_encoder_after_steps
    audio_s0 = audio_s
    while True:
        el = time.time() - t_train
        if not frozen and (freeze_min and el >= freeze_min * 60 or freeze_steps and step >= freeze_steps):
            model.freeze_feature_encoder()  # its parameters get no grad from now on: AdamW skips them
            frozen = True
            info["feature_encoder_frozen_at"] = {"step": step, "minutes": el / 60, "audio_h": audio_s / 3600}
            print(f"feature encoder frozen at step {step} ({el / 60:.1f} min)", flush=True)
        frac = step / args.max_steps if args.max_steps else el / budget_s
        if frac >= 1.0:
            break
        stop_why = (f"stopped after {el / 60:.1f} min (--stop-after-min) at step {step}"
                    if args.stop_after_min and el >= args.stop_after_min * 60 else
                    f"stopped at step {step} (--stop-after-steps)"
                    if args.stop_after_steps and step >= args.stop_after_steps else "")
        if stop_why:
            info["stopped_early"] = {"step": step, "minutes": el / 60, "schedule_fraction": frac}
            print(f"{stop_why}, {frac:.0%} of the LR schedule", flush=True)
            break
        lr = lr_peak * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        info["last_lr"] = lr
        short = (int(args.short_max_s * SR) if el < args.short_first_min * 60 or step < args.short_first_steps
                 else 0)
        clips, labels = data.sample_batch(rng, budget, short)
        if args.concat_p and not short and len(clips) > 1 and nrng.random() < args.concat_p:
            clips, labels = concat_pairs(clips, labels, nrng)
        x, mask, y = make_batch(clips, labels, nrng, device, snr_db=args.snr_db, room=(args.reverb_p, args.band_p),
                                max_pad_s=args.max_pad_s)
        audio_s += make_batch.last_samples / SR
        if stream and args.stream_ratio and pace_from[1]:
            gate.pace(pace_from[0] + gate.lead + int(args.stream_ratio * (audio_s - audio_s0) / pace_from[1]))
        ctxm = torch.autocast(device_type=device.type, dtype=amp) if amp else _null()
        with ctxm:
            outp = model(x, attention_mask=mask, labels=y)
        loss = outp.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        losses.append(loss.detach())
        now = time.time()
        if now - last_log > (30 if cuda else 20):
            print(f"step {step} t={now - t_train:.0f}s loss={float(torch.stack(losses).mean()):.3f} lr={lr:.2e} "
                  f"B={len(clips)} audio={audio_s / 3600:.1f}h thr={audio_s / (now - t_train):.0f}s/s "
                  f"pool={data.hours():.1f}h/{len(data.audio)} added={data.added}", flush=True)
            last_log = now
            losses = []
        if dev and now - last_eval > args.eval_every_min * 60:
            r = evaluate(model, dev, device, None)
            history.append({"step": step, "minutes": (now - t_train) / 60, "audio_h": audio_s / 3600,
                            "dev": {g: {"cer": c, "wer": w} for g, (c, w) in r.items()}})
            print(f"EVAL step {step} " + " ".join(f"{g}: CER={c:.3f} WER={w:.3f}" for g, (c, w) in r.items()),
                  flush=True)
            last_eval = time.time()
        if now - last_ckpt > args.ckpt_every_min * 60:
            info.update(steps=step, train_minutes=(now - t_train) / 60, audio_hours_seen=audio_s / 3600,
                        history=history, pool_hours=data.hours(), clips_generated=data.added)
            save_folder(model, ckpt, info, trainer_state=trainer_state())
            print(f"checkpoint saved to {ckpt} at step {step}", flush=True)
            last_ckpt = time.time()

    stop.set()
    gate.close()
    final_state = trainer_state()  # before the final evaluation: a resumed run starts where training ended
    train_min = (time.time() - t_train) / 60
    info.update(steps=step, train_minutes=train_min, audio_hours_seen=audio_s / 3600,
                throughput_audio_s_per_s=audio_s / (train_min * 60), history=history,
                pool_hours=data.hours(), clips_generated=data.added, generation_seconds=gen_s,
                total_minutes=(time.time() - t_start) / 60)
    if dev:
        r = evaluate(model, dev, device, None)
        info["final_dev_fp32"] = {g: {"cer": c, "wer": w} for g, (c, w) in r.items()}
        print("FINAL dev (fp32): " + " ".join(f"{g}: CER={c:.3f} WER={w:.3f}" for g, (c, w) in r.items()),
              flush=True)
    save_folder(model, out, info)
    save_folder(model, ckpt, info, trainer_state=final_state)  # a stopped run can go on (--resume)
    print(f"saved {out} after {step} steps, {train_min:.1f} min training, "
          f"{audio_s / 3600:.1f} h audio seen ({audio_s / (train_min * 60):.0f} s audio/s)", flush=True)
    if stream:
        pool.terminate()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
