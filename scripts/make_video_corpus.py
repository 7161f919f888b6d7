"""Make the labelled video clip corpus (moving Fashion-MNIST garments as MP4s) the video tasks use, offline.

    python scripts/make_video_corpus.py data/video-corpus            # 440 clips in a few seconds
    python scripts/make_video_corpus.py data/video-corpus --train-per-motion 200 --frames 16 --size 32

Needs the Debian package ``dataset-fashion-mnist`` and PyAV (``av``, which bundles FFmpeg); see
fedssl/data/video_corpus.py for what the clips show.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedssl.data.video_corpus import CorpusSpec, make_corpus  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    defaults = CorpusSpec()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write MP4s and manifest.csv into")
    parser.add_argument("--train-per-motion", type=int, default=defaults.train_per_motion)
    parser.add_argument("--test-per-motion", type=int, default=defaults.test_per_motion)
    parser.add_argument("--frames", type=int, default=defaults.frames)
    parser.add_argument("--size", type=int, default=defaults.size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    spec = CorpusSpec(train_per_motion=args.train_per_motion, test_per_motion=args.test_per_motion,
                      frames=args.frames, size=args.size, seed=args.seed)
    start = time.perf_counter()
    rows = make_corpus(args.out, spec)
    counts = Counter(r.split for r in rows)
    print(f"{len(rows)} clips in {time.perf_counter() - start:.1f} s under {args.out}: "
          + ", ".join(f"{s} {n}" for s, n in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
