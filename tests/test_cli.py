"""The command line end to end on tiny random models of both families, loaded through the real loading code."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamer.cli import main

from helpers import make_tiny_ctc_folder

ROOT = Path(__file__).resolve().parents[1]
GERMAN = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("ENISRATDHULCGMOBWFKZPVÜÄÖßJYXQ") + ["'"]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    return {
        "base": make_tiny_ctc_folder(base / "tiny-base", "base"),
        "large": make_tiny_ctc_folder(base / "tiny-large", "large"),
        "german": make_tiny_ctc_folder(base / "tiny-german", "base", vocab=GERMAN, boost=list("ÄÖÜß")),
    }


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), "Open the front door please. Then wait."], check=True)
    return path


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "streamer", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("family", ["base", "large"])
def test_stream_and_offline_both_families(models, speech_wav, tmp_path, capsys, family):
    outs = [tmp_path / f"o.{ext}" for ext in ("txt", "srt", "vtt", "jsonl")]
    args = ["--file", speech_wav, "--model", models[family], "--no-tui"]
    assert main([str(a) for a in args] + [x for o in outs for x in ("--output", str(o))]) == 0
    streamed = capsys.readouterr().out.strip().splitlines()
    assert streamed and all(line.strip() for line in streamed)
    assert outs[0].read_text(encoding="utf-8").strip().splitlines() == streamed
    assert outs[1].read_text().startswith("1\n00:00:0")
    assert outs[2].read_text().startswith("WEBVTT\n\n")
    events = [json.loads(line) for line in outs[3].read_text().splitlines()]
    types = {e["type"] for e in events}
    assert {"vad", "partial", "final", "stats"} <= types
    for e in events:
        assert "audio_time_s" in e and "wall_time_s" in e
    finals = [e for e in events if e["type"] == "final"]
    assert [f["text"] for f in finals if f["text"]] == streamed
    assert all(w["end_s"] > w["start_s"] for f in finals for w in f["words"])
    assert main(["--file", str(speech_wav), "--model", str(models[family]), "--offline"]) == 0
    assert capsys.readouterr().out.strip()


def test_german_vocabulary_outputs_valid_utf8(models, speech_wav, tmp_path, capsys):
    out = tmp_path / "de.txt"
    jl = tmp_path / "de.jsonl"
    assert main(["--file", str(speech_wav), "--model", str(models["german"]), "--no-tui",
                 "--output", str(out), "--output", str(jl)]) == 0
    text = out.read_bytes().decode("utf-8")  # raises if not valid UTF-8
    assert any(ch in text for ch in "ÄÖÜß"), text
    assert any(ch in jl.read_bytes().decode("utf-8") for ch in "ÄÖÜß")
    assert main(["--file", str(speech_wav), "--model", str(models["german"]), "--offline", "--output", str(tmp_path / "off.txt")]) == 0
    assert any(ch in (tmp_path / "off.txt").read_text(encoding="utf-8") for ch in "ÄÖÜß")


@pytest.mark.slow
def test_pretrained_only_checkpoint_is_refused(tmp_path, speech_wav):
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    folder = tmp_path / "pretrained-only"
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         conv_dim=(8,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    Wav2Vec2ForPreTraining(cfg).save_pretrained(folder)
    r = run_cli("--file", speech_wav, "--model", folder, "--no-tui")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CTC head" in lines[0] and "fine-tuned" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_flax_only_checkpoint_is_refused(tmp_path, speech_wav, capsys):
    # Like flax-community/wav2vec2-german: a pretraining config and only Flax weights.
    folder = tmp_path / "flax-only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "wav2vec2", "architectures": ["FlaxWav2Vec2ForPreTraining"]}))
    (folder / "flax_model.msgpack").write_bytes(b"\x80")
    assert main(["--file", str(speech_wav), "--model", str(folder), "--no-tui"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CTC head" in err[0]


def test_headless_model_is_refused(tmp_path, speech_wav, capsys):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    folder = tmp_path / "encoder-only"
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                            conv_dim=(8,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(config).save_pretrained(folder)
    assert main(["--file", str(speech_wav), "--model", str(folder), "--no-tui"]) != 0
    assert "no CTC head" in capsys.readouterr().err


BAD = [
    (["--file", "missing.wav"], "audio file not found"),
    (["--file", "{junk}"], "cannot read"),
    (["--file", "{empty}"], "empty"),
    (["--file", "{speech}", "--model", "./no/such/folder"], "model folder not found"),
    (["--file", "{speech}", "--model", "{folder_without_config}"], "not a Hugging Face model folder"),
    (["--file", "{speech}", "--model", "facebook/wav2vec2-base-960h"], "not reachable"),
    (["--file", "{speech}", "--hop-ms", "-5"], "bad arguments"),
    (["--file", "{speech}", "--vad-aggressiveness", "7"], "aggressiveness"),
    (["--file", "{speech}", "--output", "x.docx"], "unknown output type"),
    (["--file", "{speech}", "--output", "{existing}"], "already exists"),
    (["--file", "{speech}", "--offline", "--output", "{existing}"], "already exists"),
    (["--offline"], "--offline needs --file"),
    (["--file", "{speech}", "--replay", "slow"], "bad arguments"),
    (["--file", "{speech}", "--device", "cuda"], "no CUDA GPU"),
]


@pytest.mark.parametrize("args,expected", BAD, ids=[b[1] for b in BAD])
def test_bad_input_is_one_line(args, expected, tmp_path, speech_wav, capsys, monkeypatch):
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1)), 16000)
    (tmp_path / "nocfg").mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # behave as on a machine with no hub, quickly
    existing = tmp_path / "earlier.txt"
    existing.write_text("A TRANSCRIPT FROM AN EARLIER RUN\n")
    subs = {"{existing}": str(existing), "{junk}": str(junk), "{empty}": str(empty), "{speech}": str(speech_wav),
            "{folder_without_config}": str(tmp_path / "nocfg")}
    code = main([subs.get(a, a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1, err
    assert err[0].startswith("streamer: error: ") and expected in err[0], err
    assert existing.read_text() == "A TRANSCRIPT FROM AN EARLIER RUN\n"  # a refused run leaves earlier output alone


def test_overwrite_replaces_an_existing_output(speech_wav, tmp_path, capsys):
    out = tmp_path / "t.txt"
    out.write_text("OLD\n")
    args = ["--file", str(speech_wav), "--model", "demo", "--no-tui", "--output", str(out)]
    assert main(args) != 0 and out.read_text() == "OLD\n"
    capsys.readouterr()
    assert main(args + ["--overwrite"]) == 0
    assert "OLD" not in out.read_text()
    assert out.read_text().strip() == capsys.readouterr().out.strip()


@pytest.mark.slow
def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    r = run_cli("--file", tmp_path / "missing.wav")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"streamer: error: audio file not found: {tmp_path / 'missing.wav'} (check the path)"]
    r = run_cli("--file", tmp_path / "missing.wav", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.slow
def test_hub_id_offline_suggests_local_folder_or_demo(speech_wav):
    r = run_cli("--file", speech_wav, "--model", "facebook/wav2vec2-base-960h", "--no-tui")
    assert r.returncode != 0
    line = r.stderr.strip().splitlines()[-1]
    assert "cannot fetch model 'facebook/wav2vec2-base-960h'" in line and "--model demo" in line and "local model folder" in line
    assert "Traceback" not in r.stderr


def test_hub_id_loads_from_the_local_cache_when_offline(models, speech_wav, tmp_path, capsys, monkeypatch):
    """A hub id that was downloaded before works offline (the same from_pretrained path as online)."""
    import shutil

    cache = tmp_path / "hub"
    repo = cache / "models--test-org--tiny-ctc"
    snap = repo / "snapshots" / ("0" * 40)
    shutil.copytree(models["large"], snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    assert main(["--file", str(speech_wav), "--model", "test-org/tiny-ctc", "--offline"]) == 0
    assert capsys.readouterr().out.strip()


def test_finals_come_from_the_final_pass_unless_it_is_off(speech_wav, tmp_path, capsys):
    """Default: each utterance's final is one more pass over all of it (full_pass in the JSONL); with
    --final-pass-max-s 0 the finals are the stitched windows' text."""
    import json

    for limit, expected in (("20", True), ("0", False)):
        jl = tmp_path / f"pass{limit}.jsonl"
        assert main(["--file", str(speech_wav), "--model", "demo", "--no-tui", "--final-pass-max-s", limit,
                     "--output", str(jl)]) == 0
        finals = [e for e in map(json.loads, jl.read_text().splitlines()) if e["type"] == "final"]
        assert finals and all(f["full_pass"] is expected for f in finals), finals
        assert any(f["text"] for f in finals)
    capsys.readouterr()
    assert main(["--file", str(speech_wav), "--final-pass-max-s", "-1"]) != 0
    assert "final pass" in capsys.readouterr().err
