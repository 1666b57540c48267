"""An n-gram language model shipped with a checkpoint in the Hugging Face layout (Wav2Vec2ProcessorWithLM,
pyctcdecode's save_to_dir): `alphabet.json` beside the weights and a `language_model/` folder holding
`attrs.json` (alpha, beta, unk_score_offset, score_boundary), `unigrams.txt` and one KenLM model (.bin,
.binary or .arpa). Finding and checking it needs neither pyctcdecode nor kenlm; decoding with it is
streamer.model.beam's job."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from streamer.core.decoding import Vocabulary
from streamer.errors import ModelLoadError

#: The layout's folder and file names (pyctcdecode's BeamSearchDecoderCTC / LanguageModel constants).
LM_FOLDER = "language_model"
ALPHABET_FILE = "alphabet.json"
ATTRS_FILE = "attrs.json"
UNIGRAMS_FILE = "unigrams.txt"
KENLM_SUFFIXES = (".bin", ".binary", ".arpa")
#: pyctcdecode's unknown-token label and the blank's / word delimiter's normalised labels.
_UNK_LABEL = "⁇"
#: pyctcdecode's default log-score offset for words outside the unigram list (attrs.json without one).
DEFAULT_UNK_SCORE_OFFSET = -10.0
_REPAIR = "download or save the model again, or run with --decoder greedy"


@dataclass(frozen=True)
class LanguageModelFiles:
    """A checked `language_model/` layout: where its files are and the decoding weights it was tuned with."""

    folder: Path
    kenlm_path: Path
    unigrams_path: Path | None
    #: Weight of the LM log-probability in shallow fusion.
    alpha: float
    #: Bonus per word (counters the LM's preference for fewer, longer words).
    beta: float
    #: Log-score offset for words outside the unigram list.
    unk_score_offset: float
    #: Score the sentence boundaries (<s> ... </s>) too.
    score_boundary: bool

    def describe(self) -> str:
        return f"{self.kenlm_path.parent.parent.name}/{LM_FOLDER}/{self.kenlm_path.name} (alpha {self.alpha:g}, beta {self.beta:g})"


def find_language_model(model_dir: Path | None) -> Path | None:
    """The checkpoint's `language_model/` folder, or None when it ships none."""
    if model_dir is None:
        return None
    folder = Path(model_dir) / LM_FOLDER
    return folder if folder.is_dir() else None


def _number(attrs: dict, key: str, where: Path) -> float:
    value = attrs.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelLoadError(f"{where} has no number for {key!r} (found {value!r})", _REPAIR)
    return float(value)


def _normalised_tokens(vocabulary: Vocabulary) -> list[str]:
    """The vocabulary as pyctcdecode's alphabet writes it: blank '', delimiter ' ', <unk> '⁇'."""
    out = []
    for i, tok in enumerate(vocabulary.tokens):
        if i == vocabulary.blank_id:
            out.append("")
        elif tok == vocabulary.word_delimiter:
            out.append(" ")
        elif tok.lower() in ("<unk>", "[unk]"):
            out.append(_UNK_LABEL)
        else:
            out.append(tok)
    return out


def _check_alphabet(path: Path, vocabulary: Vocabulary) -> None:
    try:
        alphabet = json.loads(path.read_text(encoding="utf-8"))
        labels, is_bpe = alphabet["labels"], alphabet["is_bpe"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{path} is not a pyctcdecode alphabet ({type(exc).__name__}: {exc})", _REPAIR) from exc
    if is_bpe:
        raise ModelLoadError(f"{path} describes a BPE alphabet; streamer's beam search handles character vocabularies",
                             "run with --decoder greedy")
    tokens = _normalised_tokens(vocabulary)
    mismatched = [(i, lab, tok) for i, (lab, tok) in enumerate(zip(labels, tokens))
                  if len(lab) == 1 and len(tok) == 1 and lab != tok]
    if len([x for x in labels if x]) < len([t for t in tokens if t]) or mismatched:
        where = f" (id {mismatched[0][0]}: {mismatched[0][1]!r} there, {mismatched[0][2]!r} in vocab.json)" if mismatched else ""
        raise ModelLoadError(f"{path} does not match the model's vocabulary{where}", _REPAIR)


def read_language_model(folder: Path, vocabulary: Vocabulary) -> LanguageModelFiles:
    """Check a `language_model/` folder (and the alphabet.json beside it) against the model's vocabulary.
    Every problem is one ModelLoadError line naming the file."""
    folder = Path(folder)
    kenlm_files = sorted(p for p in folder.iterdir() if p.suffix in KENLM_SUFFIXES and p.is_file())
    if not kenlm_files:
        raise ModelLoadError(f"{folder} holds no KenLM model (a .bin, .binary or .arpa file)", _REPAIR)
    if len(kenlm_files) > 1:
        names = ", ".join(p.name for p in kenlm_files)
        raise ModelLoadError(f"{folder} holds several KenLM models ({names}); the layout has one", "remove all but one")
    attrs_path = folder / ATTRS_FILE
    try:
        attrs = json.loads(attrs_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{folder} has no {ATTRS_FILE} (alpha, beta, unk_score_offset)", _REPAIR) from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{attrs_path} is not valid JSON ({exc})", _REPAIR) from exc
    if not isinstance(attrs, dict):
        raise ModelLoadError(f"{attrs_path} is not a JSON object", _REPAIR)
    alphabet = folder.parent / ALPHABET_FILE
    if not alphabet.is_file():
        alphabet = folder / ALPHABET_FILE  # some exports keep it inside the folder
    if alphabet.is_file():
        _check_alphabet(alphabet, vocabulary)
    unigrams = folder / UNIGRAMS_FILE
    return LanguageModelFiles(
        folder=folder, kenlm_path=kenlm_files[0], unigrams_path=unigrams if unigrams.is_file() else None,
        alpha=_number(attrs, "alpha", attrs_path), beta=_number(attrs, "beta", attrs_path),
        unk_score_offset=_number(attrs, "unk_score_offset", attrs_path) if "unk_score_offset" in attrs else DEFAULT_UNK_SCORE_OFFSET,
        score_boundary=bool(attrs.get("score_boundary", True)),
    )


def read_unigrams(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    return [w for w in path.read_text(encoding="utf-8").split() if w]
