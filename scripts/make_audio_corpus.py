"""Make the labelled audio corpus (spoken words + synthetic notes) the audio tasks use, offline.

    python scripts/make_audio_corpus.py data/audio-corpus            # default size, < 2 min on 2 cores
    python scripts/make_audio_corpus.py data/audio-corpus --speakers 32 --repeats 2 --players 24

Needs the Debian package ``espeak-ng`` for the speech part (scripts/install.sh installs it);
without it only the non-speech part is made, with a warning. See fedssl/data/audio_corpus.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedssl.data.audio_corpus import CorpusSpec, make_corpus  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    defaults = CorpusSpec()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write WAVs and manifest.csv into")
    parser.add_argument("--speakers", type=int, default=defaults.speakers)
    parser.add_argument("--test-speakers", type=int, default=defaults.test_speakers)
    parser.add_argument("--repeats", type=int, default=defaults.repeats, help="utterances per word and speaker")
    parser.add_argument("--players", type=int, default=defaults.players)
    parser.add_argument("--test-players", type=int, default=defaults.test_players)
    parser.add_argument("--notes", type=int, default=defaults.notes, help="notes per timbre, pitch and player")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-speech", action="store_true", help="only the synthetic non-speech part")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    spec = CorpusSpec(speakers=args.speakers, test_speakers=args.test_speakers, repeats=args.repeats,
                      players=args.players, test_players=args.test_players, notes=args.notes, seed=args.seed)
    start = time.perf_counter()
    clips = make_corpus(args.out, spec, workers=args.workers, speech=not args.no_speech)
    counts = Counter((c.kind, c.split) for c in clips)
    print(f"{len(clips)} clips in {time.perf_counter() - start:.1f} s under {args.out}: "
          + ", ".join(f"{k}/{s} {n}" for (k, s), n in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
