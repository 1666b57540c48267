"""Desktop audio and mic + desktop through a real (private) PulseAudio server, measured against the offline
decode of the same clips (streamer.model.reference.reference_text, the demo model).

    .venv/bin/python benchmarks/desktop_sources.py --mode desktop          # streamer --desktop
    .venv/bin/python benchmarks/desktop_sources.py --mode both             # streamer --mic --desktop
    .venv/bin/python benchmarks/desktop_sources.py --mode both --minutes 10   # the long run: dropped samples

The server has two null sinks: `speakers`, the default output, which a media player (paplay, no device named)
plays into, and `vmic`, whose monitor is the default source (the microphone). `desktop` plays the six demo
clips one after another to the speakers. `both` plays clips 1-3 to the speakers and 4-6 into the microphone
at the same time (each pair overlapping), on repeat for --minutes when given. streamer runs as a subprocess
(`python -m streamer ... --no-tui --output run.jsonl`) and is stopped with SIGINT.

CER per source: the finals of that source, joined, against the offline decodes of the clips it was played,
joined in the same order (jiwer). Dropped samples, gaps and input overflows: the last stats event of each
source. Writes a JSON file with the host and load averages (--json).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamer.bench.pulse import PulseMic  # noqa: E402
from streamer.bench.suite import host, loadavg  # noqa: E402

CLIPS = sorted((ROOT / "assets" / "demo_clips").glob("demo[1-6]_*.wav"))
#: Pause between clips played on one source (a pause the VAD ends an utterance on).
GAP_S = 1.0


def offline_texts(model: str) -> dict[str, str]:
    from streamer.audio.files import read_16k
    from streamer.core.config import ModelConfig
    from streamer.model import load_model
    from streamer.model.reference import reference_text

    ctc = load_model(ModelConfig(name=model), warmup=False)
    return {c.name: reference_text(ctc.model, ctc.processor, read_16k(c)) for c in CLIPS}


def player(server: PulseMic, clips: list[Path], to_mic: bool, until: float, played: list[str], once: bool) -> None:
    while True:
        for clip in clips:
            if not once and time.monotonic() >= until:
                return
            (server.play if to_mic else server.play_as_media)(clip)
            played.append(clip.name)
            time.sleep(GAP_S)
        if once:
            return


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("desktop", "both"), default="both")
    ap.add_argument("--minutes", type=float, default=0.0, help="play on repeat this long (0: each clip once)")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--decoder", default=None, help="passed to streamer (greedy: finals decoded as the offline "
                    "reference is; default: streamer's own, which uses an n-gram LM a model ships)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    import jiwer

    refs = offline_texts(args.model)
    load_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="desktop-bench-") as tmp:
        server = PulseMic(Path(tmp) / "pulse")
        try:
            server.add_output("speakers")
            out = Path(tmp) / "run.jsonl"
            flags = ["--desktop"] if args.mode == "desktop" else ["--mic", "--desktop"]
            decoder = ["--decoder", args.decoder] if args.decoder else []
            proc = subprocess.Popen([sys.executable, "-m", "streamer", *flags, *decoder, "--no-tui", "--model", args.model,
                                     "--output", str(out)], env=dict(server.env, PYTHONPATH=str(ROOT)), cwd=ROOT,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            assert proc.stderr is not None
            seen: list[str] = []
            while sum(line.startswith("streamer: listening on ") for line in seen) < len(flags):
                line = proc.stderr.readline()  # other lines first: "ready (streamer ctl ...)", notes
                if not line:
                    raise SystemExit("streamer did not start: " + "".join(seen))
                seen.append(line)
            until = time.monotonic() + args.minutes * 60
            once = args.minutes <= 0
            played: dict[str, list[str]] = {"desktop": [], "mic": []}
            plan = {"desktop": (CLIPS if args.mode == "desktop" else CLIPS[:3], False)}
            if args.mode == "both":
                plan["mic"] = (CLIPS[3:], True)
            started = time.monotonic()
            threads = [threading.Thread(target=player, args=(server, clips, to_mic, until, played[src], once))
                       for src, (clips, to_mic) in plan.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(3.0)  # the last utterance's hangover and final
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
            wall_s = time.monotonic() - started
            events = [json.loads(line) for line in out.read_text().splitlines()]
        finally:
            server.stop()
    result: dict = {"mode": args.mode, "minutes": args.minutes, "model": args.model,
                    "decoder": args.decoder or "streamer default (auto)", "exit_code": proc.returncode,
                    "wall_s": round(wall_s, 1), "host": host(), "loadavg_start": load_start, "loadavg_end": loadavg(),
                    "stderr": stderr.strip().splitlines()[-10:], "sources": {}}
    for src, names in played.items():
        if not names:
            continue
        mine = [e for e in events if e.get("source", "desktop") == src]
        finals = [e["text"] for e in mine if e["type"] == "final" and e["text"]]
        stats = [e for e in mine if e["type"] == "stats"]
        expected = " ".join(refs[n] for n in names)
        got = " ".join(finals)
        last = stats[-1] if stats else {}
        result["sources"][src] = {
            "clips_played": len(names), "finals": len(finals), "cer_vs_offline": round(jiwer.cer(expected, got), 4),
            "audio_s": last.get("processed_s"), "dropped_samples": last.get("dropped_samples"),
            "gap_samples": last.get("gap_samples"), "gaps": last.get("gaps"),
            "input_overflows": last.get("input_overflows"),
            "max_lag_s": max((s["lag_s"] for s in stats), default=None),
            "example": {"offline": refs[names[0]], "streamed": finals[0] if finals else ""},
        }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
