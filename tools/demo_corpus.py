"""Text corpus, espeak-ng synthesis and held-out manifest for the demo wav2vec2 CTC model.

Everything here is deterministic given its inputs (and the installed text packages /
espeak-ng version).  Used by ``train_demo_model.py`` and ``eval_demo_model.py``.

Text sources (all offline, on a Debian machine):
  * Debian ``fortunes`` / ``fortunes-min`` (quotes, jokes, literature, proverbs, songs ...)
  * licence texts in /usr/share/common-licenses
  * man pages (/usr/share/man/man{1,5,7,8}) with the troff markup stripped
  * README files in /usr/share/doc
  * random word sequences from the ``wamerican`` word list (teaches spelling, not grammar)

Every sentence is normalised to the wav2vec2-base-960h character set (A-Z, apostrophe,
``|`` between words); numbers are spelled out; a sentence is kept only if every word is in
the ``wamerican`` dictionary (so espeak-ng reads it as a word and the label matches the
audio).  The train / held-out split is by a hash of the normalised sentence, so no
sentence is ever in both.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000

# Exact vocabulary of facebook/wav2vec2-base-960h.
VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "E": 5, "T": 6, "A": 7, "O": 8,
         "N": 9, "I": 10, "H": 11, "S": 12, "R": 13, "D": 14, "L": 15, "U": 16, "M": 17,
         "W": 18, "C": 19, "F": 20, "G": 21, "Y": 22, "P": 23, "B": 24, "V": 25, "K": 26,
         "'": 27, "X": 28, "J": 29, "Q": 30, "Z": 31}

# --------------------------------------------------------------------------- voices
TRAIN_ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
                 "en-us-nyc"]
TRAIN_VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4",
                  "Andy", "Annie", "Alicia", "Lee", "Michael", "adam", "anika", "edward",
                  "linda", "max", "paul", "norbert", "belinda", "david", "john"]
# Never used in training: neither the accent nor the variant.
HELDOUT_VOICE = "en-gb-x-gbcwmd+f5"
# espeak-ng words per minute and pitch of the held-out manifest's items (uniform, inclusive)
MANIFEST_SPEED_WPM = (140, 200)
MANIFEST_PITCH = (35, 65)

TEXT_PACKAGES = ["fortunes", "fortunes-min", "wamerican", "man-db"]

# ------------------------------------------------------------------- number words
_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORD = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
        "nine": "ninth", "twelve": "twelfth"}


def number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    for div, name in ((10 ** 9, "billion"), (10 ** 6, "million"), (1000, "thousand")):
        if n >= div:
            rest = n % div
            return (number_words(n // div) + " " + name
                    + ("" if rest == 0 else " " + number_words(rest)))
    raise ValueError(n)


def ordinal_words(n: int) -> str:
    words = number_words(n).split()
    last = words[-1]
    if last in _ORD:
        last = _ORD[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last = last + "th"
    return " ".join(words[:-1] + [last])


def _spell_number(tok: str) -> str | None:
    m = re.fullmatch(r"(\d+)(st|nd|rd|th)", tok)
    if m:
        return ordinal_words(int(m.group(1))) if len(m.group(1)) <= 6 else None
    if re.fullmatch(r"\d{1,3}(,\d{3})+", tok):
        tok = tok.replace(",", "")
    if re.fullmatch(r"\d+\.\d+", tok):
        a, b = tok.split(".")
        if len(a) > 9 or len(b) > 4:
            return None
        return number_words(int(a)) + " point " + " ".join(_ONES[int(d)] for d in b)
    if re.fullmatch(r"\d+", tok):
        if len(tok) > 9:
            return None
        n = int(tok)
        if len(tok) == 4 and 1100 <= n <= 1999:  # years read as years
            hi, lo = divmod(n, 100)
            return number_words(hi) + (" hundred" if lo == 0 else
                                       (" oh " + _ONES[lo] if lo < 10 else " " + number_words(lo)))
        if len(tok) > 1 and tok.startswith("0"):
            return " ".join(_ONES[int(d)] for d in tok)
        return number_words(n)
    return None


# ------------------------------------------------------------------ normalisation
# Words espeak-ng expands or spells out although they are in the word list.
_BLACKLIST = {"mr", "mrs", "ms", "dr", "st", "vs", "etc", "jr", "sr", "inc", "ltd", "co",
              "ave", "dept", "gov", "prof", "sgt", "capt", "col", "gen", "lt", "rev", "esq",
              "am", "pm", "ft", "oz", "lb", "lbs", "kg", "km", "cm", "mm", "ie", "eg", "ok",
              "tv", "pc", "usa", "uk", "hq", "id", "ad", "bc"}
_BAD_CHARS = re.compile(r"[<>=@#_{}\[\]|*~^`\\/$+]")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"',
                         "\u2014": " - ", "\u2013": " - ", "`": "'"})

_dictionary: set[str] | None = None


def dictionary() -> set[str]:
    global _dictionary
    if _dictionary is None:
        path = Path("/usr/share/dict/american-english")
        if not path.exists():
            raise SystemExit("wamerican is not installed (apt-get install wamerican)")
        words = {w.strip().lower() for w in path.read_text(encoding="utf-8", errors="ignore").split("\n")}
        _dictionary = {w for w in words if re.fullmatch(r"[a-z']+", w)}
        _dictionary |= set(" ".join(_ONES + _TENS + ["hundred", "thousand", "million", "billion", "point",
                                                      "oh"]).split())
    return _dictionary


def normalise(sentence: str) -> str | None:
    """Return the text to speak (lower case words + light punctuation) or None to drop it.

    The CTC label is ``label_of(result)``.
    """
    s = sentence.translate(_QUOTES)
    if _BAD_CHARS.search(s) or not re.search(r"[A-Za-z]", s):
        return None
    s = s.replace("&", " and ").replace("%", " percent")
    s = re.sub(r"(?<=[A-Za-z])-(?=[A-Za-z])", " ", s)  # well-known -> well known
    s = re.sub(r"[\"()]", " ", s)
    words = dictionary()
    out = []
    for raw in s.split():
        m = re.fullmatch(r"'*([A-Za-z0-9'.,]*?[A-Za-z0-9])'*([.,!?;:]*)'*", raw)
        if raw in {"-", "--", "..."}:
            out.append(",")
            continue
        if not m:
            if re.fullmatch(r"[.,!?;:]+", raw):
                continue
            return None
        core, punct = m.group(1), m.group(2)
        if re.search(r"\d", core):
            spoken = _spell_number(core)
            if spoken is None:
                return None
            out.extend(spoken.split())
        else:
            w = core.lower()
            if not re.fullmatch(r"[a-z]+('[a-z]+)?", w) or w in _BLACKLIST:
                return None
            if w not in words:
                base = w[:-2] if w.endswith("'s") else None
                if base is None or base not in words:
                    return None
            out.append(w)
        if punct:
            out[-1] = out[-1] + punct[0]
    text = " ".join(out).strip(" ,")
    text = re.sub(r"(^|\s),", r"\1", text).strip()
    if not label_of(text):
        return None
    return text


def label_of(speak_text: str) -> str:
    """CTC transcript (base-960h style, words separated by spaces) of a speak text."""
    return " ".join(re.sub(r"[^A-Z']", "", w.upper()) for w in speak_text.split()
                    if re.sub(r"[^A-Z']", "", w.upper())).strip()


# ------------------------------------------------------------------------ sources
def _split_sentences(text: str) -> list[str]:
    text = re.sub(r"\s+", " ", text).strip()
    parts = re.split(r"(?<=[.!?])\s+(?=[\"'(A-Z0-9])", text)
    out = []
    for p in parts:
        words = p.split()
        if len(words) <= 30:
            out.append(p)
            continue
        # long sentence: cut at commas / semicolons into pieces of <= 30 words
        chunk: list[str] = []
        for w in words:
            chunk.append(w)
            if (len(chunk) >= 8 and w[-1:] in ",;:") or len(chunk) >= 30:
                out.append(" ".join(chunk))
                chunk = []
        if chunk:
            out.append(" ".join(chunk))
    return out


def _fortunes() -> list[str]:
    root = Path("/usr/share/games/fortunes")
    out = []
    for f in sorted(root.glob("*")):
        if f.suffix or not f.is_file():
            continue
        for cookie in f.read_text(encoding="utf-8", errors="ignore").split("\n%\n"):
            lines = [ln for ln in cookie.splitlines() if not re.match(r"\s*(--|-- )", ln)]
            out.extend(_split_sentences(" ".join(lines)))
    return out


def _licences() -> list[str]:
    out = []
    for f in sorted(Path("/usr/share/common-licenses").glob("*")):
        if f.is_file() and not f.is_symlink():
            out.extend(_split_sentences(f.read_text(encoding="utf-8", errors="ignore")))
    return out


_TROFF_ESC = re.compile(r"\\f(\[[^\]]*\]|\(..|.)|\\\(..|\\\[[^\]]*\]|\\s[-+]?\d+|\\[&\-e|^%c:]|\\\*\(..|\\\*.")


def _man_text(path: Path) -> str:
    try:
        raw = gzip.open(path, "rt", encoding="utf-8", errors="ignore").read() if path.suffix == ".gz" \
            else path.read_text(encoding="utf-8", errors="ignore")
    except (OSError, EOFError):
        return ""
    paras, cur = [], []
    for ln in raw.splitlines():
        if ln.startswith((".", "'")):
            if re.match(r"[.'](PP|LP|P|SH|SS|TP|IP|HP|sp|br|RS|RE|TH)\b", ln):
                if cur:
                    paras.append(" ".join(cur))
                cur = []
            continue
        cur.append(_TROFF_ESC.sub("", ln))
    if cur:
        paras.append(" ".join(cur))
    return "\n".join(paras)


def _man_pages(limit_files: int = 6000, seed: int = 0) -> list[str]:
    files = []
    for sec in ("man1", "man5", "man7", "man8"):
        files.extend(sorted(Path("/usr/share/man", sec).glob("*")))
    random.Random(seed).shuffle(files)
    out = []
    for f in files[:limit_files]:
        for para in _man_text(f).split("\n"):
            out.extend(_split_sentences(para))
    return out


def _docs(seed: int = 0) -> list[str]:
    files = sorted(p for p in Path("/usr/share/doc").glob("*/README*") if p.is_file())
    out = []
    for f in files:
        try:
            txt = gzip.open(f, "rt", errors="ignore").read() if f.suffix == ".gz" else f.read_text(errors="ignore")
        except (OSError, EOFError, UnicodeError):
            continue
        for para in re.split(r"\n\s*\n", txt):
            out.extend(_split_sentences(para))
    return out


def is_heldout(label: str, permille: int = 25) -> bool:
    h = int(hashlib.sha1(label.encode()).hexdigest()[:8], 16)
    return h % 1000 < permille


def build_corpus(out_dir: Path, seed: int = 0) -> dict:
    """Write ``train.tsv`` and ``heldout.tsv`` (source<TAB>speak_text) into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = {"fortunes": _fortunes(), "licences": _licences(), "man": _man_pages(seed=seed),
               "docs": _docs(seed=seed)}
    seen: set[str] = set()
    train, held = [], []
    stats = {}
    for name, sents in sources.items():
        kept = 0
        for s in sents:
            t = normalise(s)
            if t is None:
                continue
            lab = label_of(t)
            if lab in seen:
                continue
            seen.add(lab)
            kept += 1
            (held if is_heldout(lab) else train).append((name, t))
        stats[name] = {"raw": len(sents), "kept": kept}
    for fn, rows in (("train.tsv", train), ("heldout.tsv", held)):
        with open(out_dir / fn, "w", encoding="utf-8") as f:
            for name, t in rows:
                f.write(f"{name}\t{t}\n")
    stats["train"] = len(train)
    stats["heldout"] = len(held)
    return stats


def read_corpus(path: Path) -> list[tuple[str, str]]:
    rows = []
    for ln in Path(path).read_text(encoding="utf-8").splitlines():
        src, _, t = ln.partition("\t")
        rows.append((src, t))
    return rows


def random_word_sentence(rng: random.Random, wordlist: list[str]) -> str:
    return " ".join(rng.choice(wordlist) for _ in range(rng.randint(2, 12)))


def wordlist_for_random() -> list[str]:
    return sorted(w for w in dictionary() if re.fullmatch(r"[a-z]{2,12}", w) and w not in _BLACKLIST)


# ---------------------------------------------------------------------- synthesis
def _espeak_cmd() -> list[str]:
    """espeak-ng command; ESPEAK_NG_DIR (binary + lib/ + data/) may point to a carried copy."""
    d = os.environ.get("ESPEAK_NG_DIR")
    if d:
        return [str(Path(d) / "espeak-ng"), f"--path={Path(d) / 'data'}"]
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng not found (apt-get install espeak-ng)")
    return [exe]


def _espeak_env() -> dict:
    env = dict(os.environ)
    d = os.environ.get("ESPEAK_NG_DIR")
    if d:
        env["LD_LIBRARY_PATH"] = str(Path(d) / "lib") + ":" + env.get("LD_LIBRARY_PATH", "")
    return env


def espeak(text: str, voice: str, speed: int = 175, pitch: int = 50, gap: int = 0) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng; float32 mono at 16 kHz (resampled with soxr)."""
    import soxr
    cmd = _espeak_cmd() + ["-v", voice, "-s", str(speed), "-p", str(pitch), "-g", str(gap),
                           "--stdout", "--", text]
    wav = subprocess.run(cmd, capture_output=True, check=True, env=_espeak_env()).stdout
    if wav[:4] != b"RIFF":
        raise RuntimeError(f"espeak-ng gave no WAV for {text!r}")
    sr = int.from_bytes(wav[24:28], "little")
    # find the data chunk
    pos = 12
    while pos + 8 <= len(wav):
        cid, size = wav[pos:pos + 4], int.from_bytes(wav[pos + 4:pos + 8], "little")
        if cid == b"data":
            pos += 8
            break
        pos += 8 + size
    pcm = np.frombuffer(wav[pos:pos + ((len(wav) - pos) // 2) * 2], dtype="<i2").astype(np.float32) / 32768.0
    if sr != SAMPLE_RATE:
        pcm = soxr.resample(pcm, sr, SAMPLE_RATE).astype(np.float32)
    return pcm


# --------------------------------------------------------------- non-speech audio
def nonspeech(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Synthetic non-speech (noise colours, tones/chords, clicks) labelled with empty text."""
    n = int(seconds * SAMPLE_RATE)
    kind = rng.integers(0, 5)
    t = np.arange(n) / SAMPLE_RATE
    if kind == 0:  # coloured noise
        x = rng.standard_normal(n)
        alpha = rng.uniform(0, 2)
        spec = np.fft.rfft(x)
        f = np.arange(len(spec)) + 1.0
        x = np.fft.irfft(spec / f ** (alpha / 2), n)
    elif kind == 1:  # "music": random notes with harmonics and envelopes
        x = np.zeros(n)
        pos = 0
        while pos < n:
            dur = int(rng.uniform(0.1, 0.8) * SAMPLE_RATE)
            seg = np.zeros(min(dur, n - pos))
            tt = np.arange(len(seg)) / SAMPLE_RATE
            for _ in range(rng.integers(1, 4)):
                f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
                vib = 1 + 0.005 * np.sin(2 * np.pi * rng.uniform(4, 7) * tt)
                for h in range(1, rng.integers(2, 8)):
                    seg += np.sin(2 * np.pi * f0 * h * tt * vib) / h ** rng.uniform(0.7, 2)
            env = np.minimum(1, tt / 0.02) * np.exp(-tt * rng.uniform(0, 4))
            x[pos:pos + len(seg)] += seg * env
            pos += int(dur * rng.uniform(0.5, 1.0))
    elif kind == 2:  # clicks and clatter
        x = rng.standard_normal(n) * 0.01
        for _ in range(int(seconds * rng.uniform(1, 8))):
            p = rng.integers(0, n)
            L = int(rng.uniform(0.005, 0.1) * SAMPLE_RATE)
            burst = rng.standard_normal(min(L, n - p)) * np.exp(-np.arange(min(L, n - p)) / (L / 5))
            if rng.random() < 0.5:
                burst *= np.sin(2 * np.pi * rng.uniform(1000, 6000) * np.arange(len(burst)) / SAMPLE_RATE)
            x[p:p + len(burst)] += burst * rng.uniform(0.2, 1)
    elif kind == 3:  # hum / tones
        x = sum(np.sin(2 * np.pi * rng.uniform(50, 2000) * t + rng.uniform(0, 6)) * rng.uniform(0.1, 1)
                for _ in range(rng.integers(1, 5)))
        x = x + rng.standard_normal(n) * 0.05
    else:  # near silence
        x = rng.standard_normal(n) * 10 ** rng.uniform(-5, -2)
    x = np.asarray(x, dtype=np.float64)
    x = x / (np.abs(x).max() + 1e-9) * 10 ** rng.uniform(-2, -0.1)
    return x.astype(np.float32)


# ------------------------------------------------------------- held-out manifest
MANIFEST_COLUMNS = ["id", "group", "voice", "speed", "pitch", "lead_s", "trail_s", "snr_db",
                    "seed", "text"]


def make_heldout_manifest(heldout_rows: list[tuple[str, str]], n_per_group: int = 200,
                          seed: int = 1234) -> list[dict]:
    """Choose held-out sentences and fixed voice settings: 'seen' voices and the held-out voice."""
    rng = random.Random(seed)
    rows = [r for r in heldout_rows if 1 <= len(r[1].split()) <= 30]
    rng.shuffle(rows)
    items = []
    for gi, group in enumerate(("seen_voices", "heldout_voice")):
        for k, (_src, text) in enumerate(rows[gi * n_per_group:(gi + 1) * n_per_group]):
            if group == "seen_voices":
                acc = rng.choice(TRAIN_ACCENTS)
                var = rng.choice(TRAIN_VARIANTS)
                voice = acc + ("+" + var if var else "")
            else:
                voice = HELDOUT_VOICE
            items.append({"id": f"{group}_{k:04d}", "group": group, "voice": voice,
                          "speed": rng.randint(*MANIFEST_SPEED_WPM), "pitch": rng.randint(*MANIFEST_PITCH),
                          "lead_s": round(rng.uniform(0.05, 0.4), 3),
                          "trail_s": round(rng.uniform(0.05, 0.4), 3), "snr_db": 30.0,
                          "seed": rng.randint(0, 2 ** 31 - 1), "text": text})
    return items


def write_manifest(items: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(MANIFEST_COLUMNS) + "\n")
        for it in items:
            f.write("\t".join(str(it[c]) for c in MANIFEST_COLUMNS) + "\n")


def read_manifest(path: Path) -> list[dict]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    cols = lines[0].split("\t")
    items = []
    for ln in lines[1:]:
        it = dict(zip(cols, ln.split("\t")))
        for c in ("speed", "pitch", "seed"):
            it[c] = int(it[c])
        for c in ("lead_s", "trail_s", "snr_db"):
            it[c] = float(it[c])
        items.append(it)
    return items


def render_item(it: dict) -> np.ndarray:
    """Deterministically render one manifest item to float32 16 kHz audio."""
    rng = np.random.default_rng(it["seed"])
    speech = espeak(it["text"], it["voice"], it["speed"], it["pitch"])
    x = np.concatenate([np.zeros(int(it["lead_s"] * SAMPLE_RATE), np.float32), speech,
                        np.zeros(int(it["trail_s"] * SAMPLE_RATE), np.float32)])
    rms = float(np.sqrt(np.mean(speech ** 2)) + 1e-9)
    x = x + rng.standard_normal(len(x)).astype(np.float32) * rms * 10 ** (-it["snr_db"] / 20)
    return x.astype(np.float32)


if __name__ == "__main__":
    import argparse
    import json
    ap = argparse.ArgumentParser(description="Build the demo text corpus")
    ap.add_argument("--out", default="build/demo_corpus")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(json.dumps(build_corpus(Path(a.out), a.seed), indent=1))
