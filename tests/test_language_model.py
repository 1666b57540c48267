"""Language-model finals: a checkpoint's n-gram LM in the Hugging Face layout (alphabet.json beside the weights,
language_model/ with attrs.json, unigrams.txt and a KenLM model) is checked, turned on for finals by default,
turned off by --decoder greedy, and a missing kenlm is one line (a warning and greedy finals under auto, an
error under --decoder beam). The slow tests load the bundled demo model with its shipped LM."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from streamer.app.options import DecoderOptions
from streamer.core.decoding import Vocabulary
from streamer.errors import MissingDependencyError, ModelLoadError
from streamer.model.language_model import find_language_model, read_language_model

from desktop_fixtures import run_streamer, speech_clip  # noqa: F401
from helpers import LETTERS

VOCAB = Vocabulary(tuple(LETTERS), blank_id=0, word_delimiter="|")
TEXT = ["THE CAT SAT ON THE MAT", "THE CAT IS BLACK", "A CAT AND A DOG", "THE DOG SAT ON THE CAT"]


def needs_kenlm():
    pytest.importorskip("pyctcdecode", reason="the beam extra is not installed (pip install 'streamer[beam]')")
    pytest.importorskip("kenlm", reason="kenlm is not installed (pip install 'streamer[beam]'; scripts/setup.sh does)")


def write_arpa(path: Path, sentences: list[str]) -> None:
    """A bigram ARPA file estimated from `sentences` (maximum likelihood, add-one for unseen unigrams; kenlm
    loads any well-formed ARPA, normalised or not): the test builds its LM from text without lmplz."""
    uni: Counter[str] = Counter()
    bi: Counter[tuple[str, str]] = Counter()
    for s in sentences:
        words = ["<s>", *s.split(), "</s>"]
        uni.update(words)
        bi.update(zip(words, words[1:]))
    total = sum(uni.values()) + 1
    lines = ["\\data\\", f"ngram 1={len(uni) + 1}", f"ngram 2={len(bi)}", "", "\\1-grams:",
             f"{math.log10(1 / total):.4f}\t<unk>\t0"]
    for w, c in sorted(uni.items()):
        lines.append(f"{math.log10(c / total) if w != '<s>' else -99:.4f}\t{w}\t-0.3")
    lines += ["", "\\2-grams:"]
    for (a, b), c in sorted(bi.items()):
        lines.append(f"{math.log10(c / uni[a]):.4f}\t{a} {b}")
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines))


def make_layout(model_dir: Path, alpha: float = 0.8, beta: float = 1.0, alphabet: list[str] | None = None) -> Path:
    """alphabet.json + language_model/{attrs.json, unigrams.txt, lm.arpa}, as Wav2Vec2ProcessorWithLM saves."""
    model_dir.mkdir(parents=True, exist_ok=True)
    labels = alphabet or ["", "<s>", "</s>", "⁇", " ", *LETTERS[5:]]
    (model_dir / "alphabet.json").write_text(json.dumps({"labels": labels, "is_bpe": False}))
    folder = model_dir / "language_model"
    folder.mkdir()
    (folder / "attrs.json").write_text(json.dumps({"alpha": alpha, "beta": beta, "unk_score_offset": -10.0,
                                                   "score_boundary": True}))
    (folder / "unigrams.txt").write_text("\n".join(sorted({w for s in TEXT for w in s.split()})) + "\n")
    write_arpa(folder / "lm.arpa", TEXT)
    return folder


def test_layout_is_found_and_read(tmp_path):
    assert find_language_model(tmp_path) is None
    folder = make_layout(tmp_path / "m")
    assert find_language_model(tmp_path / "m") == folder
    lm = read_language_model(folder, VOCAB)
    assert (lm.kenlm_path.name, lm.alpha, lm.beta, lm.unk_score_offset, lm.score_boundary) == ("lm.arpa", 0.8, 1.0, -10.0, True)
    assert lm.unigrams_path == folder / "unigrams.txt"
    assert "m/language_model/lm.arpa (alpha 0.8, beta 1)" == lm.describe()


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "attrs.json").unlink(), "has no attrs.json"),
    (lambda f: (f / "attrs.json").write_text("{"), "attrs.json is not valid JSON"),
    (lambda f: (f / "attrs.json").write_text('{"alpha": "high", "beta": 1}'), "has no number for 'alpha'"),
    (lambda f: (f / "lm.arpa").unlink(), "holds no KenLM model"),
    (lambda f: (f / "lm.bin").write_text("x"), "holds several KenLM models (lm.arpa, lm.bin)"),
    (lambda f: (f.parent / "alphabet.json").write_text(json.dumps({"labels": ["", "<s>", "</s>", "⁇", " ", "T", "E",
                                                                              *LETTERS[7:]], "is_bpe": False})),
     "alphabet.json does not match the model's vocabulary (id 5: 'T' there, 'E' in vocab.json)"),
    (lambda f: (f.parent / "alphabet.json").write_text(json.dumps({"labels": ["", " ", "▁A"], "is_bpe": True})),
     "describes a BPE alphabet"),
])
def test_a_damaged_layout_is_one_line_naming_the_file(tmp_path, damage, message):
    folder = make_layout(tmp_path / "m")
    damage(folder)
    with pytest.raises(ModelLoadError) as err:
        read_language_model(folder, VOCAB)
    assert message in err.value.one_line() and "\n" not in err.value.one_line()


def fake_model(lm_dir: Path | None):
    return SimpleNamespace(vocabulary=VOCAB, language_model_dir=lm_dir)


def logits_for(spelling: str) -> np.ndarray:
    out = np.full((len(spelling), len(LETTERS)), -10.0, np.float32)
    for i, ch in enumerate(spelling):
        out[i, 0 if ch == "_" else LETTERS.index("|" if ch == " " else ch)] = 10.0
    return out


def cut_or_cat() -> np.ndarray:
    """Greedy reads 'THE CUT SAT': the vowel frame leans to U; the LM knows only CAT."""
    spelling = "TH_E_ C_A_T S_A_T"
    x = logits_for(spelling)
    i = spelling.index("A")
    x[i] = -10.0
    x[i, LETTERS.index("A")], x[i, LETTERS.index("U")] = 1.0, 1.6
    return x


def test_shipped_lm_turns_on_by_default_and_decodes_with_its_weights(tmp_path, capsys):
    needs_kenlm()
    from streamer.app.run import final_rescorer

    model = fake_model(make_layout(tmp_path / "m"))
    rescorer = final_rescorer(DecoderOptions(), model, None)  # --decoder auto, the default
    assert rescorer is not None and rescorer.language_model is not None
    assert rescorer.language_model.alpha == 0.8
    assert rescorer(cut_or_cat()) == "THE CAT SAT"
    assert final_rescorer(DecoderOptions(kind="beam"), model, None) is not None
    assert capsys.readouterr().err == ""
    # the same logits without an LM: beam search agrees with greedy
    assert final_rescorer(DecoderOptions(kind="beam"), fake_model(None), None)(cut_or_cat()) == "THE CUT SAT"


def test_command_phrases_bias_finals_only_when_beam_search_is_asked_for(tmp_path):
    """The LM on by default must not pull near misses into command phrases (they run programs); --hotwords,
    given on purpose, are used."""
    needs_kenlm()
    from streamer.app.run import final_rescorer

    model = fake_model(make_layout(tmp_path / "m"))
    desktop = SimpleNamespace(hotwords=("open the editor",))
    assert final_rescorer(DecoderOptions(), model, desktop).hotwords == ()
    assert final_rescorer(DecoderOptions(hotwords=("cat",)), model, desktop).hotwords == ("CAT",)
    assert final_rescorer(DecoderOptions(kind="beam"), model, desktop).hotwords == ("OPEN THE EDITOR",)


def test_decoder_greedy_turns_the_shipped_lm_off(tmp_path):
    from streamer.app.run import final_rescorer

    model = fake_model(make_layout(tmp_path / "m"))
    assert final_rescorer(DecoderOptions(kind="greedy"), model, None) is None
    assert final_rescorer(DecoderOptions(), fake_model(None), None) is None  # no LM shipped: greedy


def test_greedy_does_not_even_read_a_damaged_layout(tmp_path):
    from streamer.app.run import final_rescorer

    folder = make_layout(tmp_path / "m")
    (folder / "attrs.json").unlink()
    assert final_rescorer(DecoderOptions(kind="greedy"), fake_model(folder), None) is None
    with pytest.raises(ModelLoadError, match="has no attrs.json"):
        final_rescorer(DecoderOptions(), fake_model(folder), None)


def test_missing_kenlm_warns_and_decodes_greedily_under_auto_and_fails_under_beam(tmp_path, monkeypatch, capsys):
    from streamer.app.run import final_rescorer

    monkeypatch.setitem(sys.modules, "kenlm", None)  # as if not installed
    model = fake_model(make_layout(tmp_path / "m"))
    assert final_rescorer(DecoderOptions(), model, None) is None
    err = capsys.readouterr().err
    assert err == ("streamer: warning: the model ships a language model but the optional dependency 'kenlm' is not "
                   "installed, so finals are decoded greedily (install it: pip install 'streamer[beam]', or pass "
                   "--decoder greedy)\n")
    with pytest.raises(MissingDependencyError) as exc:
        final_rescorer(DecoderOptions(kind="beam"), model, None)
    assert exc.value.one_line() == ("the optional dependency 'kenlm' is not installed "
                                    "(install it: pip install 'streamer[beam]')")
    assert final_rescorer(DecoderOptions(kind="greedy"), model, None) is None
    assert capsys.readouterr().err == ""  # --decoder greedy: nothing to warn about


@pytest.mark.slow
def test_a_checkpoint_with_lm_loads_and_its_folder_is_known(tmp_path):
    """A Wav2Vec2ProcessorWithLM checkpoint (processor_class says so) loads its tokenizer and features
    without pyctcdecode (AutoProcessor would build the LM decoder), and the model knows its LM folder."""
    from streamer.model import load_model

    from helpers import make_tiny_ctc_folder

    folder = make_tiny_ctc_folder(tmp_path / "model", "base")
    cfg = folder / "processor_config.json"
    data = json.loads(cfg.read_text()) if cfg.exists() else {}
    cfg.write_text(json.dumps({**data, "processor_class": "Wav2Vec2ProcessorWithLM"}))
    lm = make_layout(folder)
    ctc = load_model(str(folder), warmup=False)
    assert ctc.language_model_dir == lm
    assert load_model(str(make_tiny_ctc_folder(tmp_path / "plain", "base")), warmup=False).language_model_dir is None


@pytest.mark.slow
def test_cli_greedy_with_lm_file_is_one_line(tmp_path, speech_clip):
    out = run_streamer(["--file", str(speech_clip), "--no-tui", "--decoder", "greedy", "--lm", "x.arpa"], tmp_path, timeout=60)
    assert out.returncode == 2 and out.stderr.strip() == (
        "streamer: error: --lm needs beam search, and --decoder greedy turns it off (drop --decoder greedy; beam "
        "search needs pip install 'streamer[beam]')")


# --- the bundled demo model and its shipped LM (tools/build_demo_lm.sh) -----------------------------------------

def demo_with_lm():
    from streamer.model import demo_model_path

    folder = demo_model_path()
    if find_language_model(folder) is None:
        pytest.skip("the demo model ships no language_model/ (tools/build_demo_lm.sh builds it)")
    return folder


def test_demo_model_ships_a_small_lm_in_the_layout():
    folder = demo_with_lm()
    vocab = json.loads((folder / "vocab.json").read_text())
    tokens = tuple(t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]))
    lm = read_language_model(folder / "language_model", Vocabulary(tokens, vocab["<pad>"], "|"))
    assert lm.kenlm_path.suffix == ".bin" and lm.kenlm_path.stat().st_size < 8_000_000
    assert lm.unigrams_path is not None and len(lm.unigrams_path.read_text().split()) > 1000


@pytest.mark.slow
def test_demo_lm_lowers_wer_on_everyday_sentences(tmp_path, capsys):
    """Golden, derived rather than pinned (a retrained model must not break it): on everyday sentences in
    training voices (never used to build or tune the LM) the demo model's finals with its LM have fewer word
    errors than without, and the CLI's default output is the LM's, --decoder greedy's the greedy one."""
    needs_kenlm()
    pytest.importorskip("jiwer")
    import jiwer
    import soundfile as sf

    tools = Path(__file__).resolve().parents[1] / "tools"
    sys.path.insert(0, str(tools))
    import streamer.cli as cli
    from streamer.app.run import final_rescorer
    from streamer.model import load_model
    from streamer.model.reference import reference_decode

    from eval_demo_model import load_heldout_clips

    demo_with_lm()
    data = load_heldout_clips(tools / "demo_everyday_manifest.tsv", groups=["seen_voices"], limit=8, threads=2)
    ctc = load_model("demo", warmup=False)
    rescorer = final_rescorer(DecoderOptions(), ctc, None)
    assert rescorer is not None
    refs, greedy, lm = [], [], []
    for _, audio, ref in data:
        r = reference_decode(ctc.model, ctc.processor, audio)
        refs.append(ref)
        greedy.append(" ".join(r.text.split()))
        lm.append(rescorer(r.logits))
    assert jiwer.wer(refs, lm) < jiwer.wer(refs, greedy), list(zip(refs, greedy, lm))
    # the CLI: one clip whose LM final differs from the greedy one, offline (one final, no VAD split)
    k = next(i for i in range(len(refs)) if lm[i] != greedy[i])
    sf.write(tmp_path / "clip.wav", data[k][1], 16000)
    base = ["--file", str(tmp_path / "clip.wav"), "--model", "demo", "--no-tui", "--offline"]
    capsys.readouterr()
    assert cli.main(base) == 0
    assert capsys.readouterr().out.strip() == lm[k]
    assert cli.main([*base, "--decoder", "greedy"]) == 0
    assert capsys.readouterr().out.strip() == greedy[k]


def test_decoder_beam_without_kenlm_fails_before_the_model_loads(tmp_path, monkeypatch):
    """The model folder is looked at before loading: --decoder beam on a model that ships an LM needs kenlm,
    said at once; auto and greedy go on (auto warns after loading, tested above)."""
    from streamer.app.run import check_decoder

    folder = tmp_path / "m"
    make_layout(folder)
    (folder / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "kenlm", None)
    with pytest.raises(MissingDependencyError, match="'kenlm' is not installed"):
        check_decoder(DecoderOptions(kind="beam"), str(folder))
    check_decoder(DecoderOptions(), str(folder))
    check_decoder(DecoderOptions(kind="greedy"), str(folder))
    check_decoder(DecoderOptions(kind="beam"), str(tmp_path / "missing"))  # load_model will say what is wrong
