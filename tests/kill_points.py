"""Run a gallerytag step in this process and SIGKILL it at a chosen point of its commit.

    python -m tests.kill_points POINT tag|ingest JSON_ARGS

POINT is `none` (just run), `move:N` (die just before the commit's N-th file move; 0 =
after the old output was deleted, before anything new is in place) or `marker` (die right
after the marker is written, before the staging folder and the claim are cleaned up). The
kill is a real SIGKILL of this process; the step itself runs unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from components.common import storage


def arm(point: str) -> None:
    """Make the commit's storage calls SIGKILL this process at `point`."""
    if point.startswith("move:"):
        limit, calls, real_move = int(point[5:]), [0], storage.move

        def move(src: str, dst: str) -> None:
            if calls[0] == limit:
                os.kill(os.getpid(), signal.SIGKILL)
            calls[0] += 1
            real_move(src, dst)

        storage.move = move
    elif point == "marker":
        real_write = storage.write_text

        def write_text(url: str, text: str) -> None:
            real_write(url, text)
            if url.rsplit("/", 1)[-1] in ("_SUCCESS.json", "manifest.json"):
                os.kill(os.getpid(), signal.SIGKILL)

        storage.write_text = write_text
    else:
        raise SystemExit(f"unknown kill point {point!r}: use move:N or marker")


def tag(model_file: str, source: str, out: str) -> None:
    """The tagging step with a two-label test model (as tests/test_tag_resume.py builds it)."""
    from components.common.tracking import TaggerSpec
    from components.tag.pipeline import run

    spec = TaggerSpec(model_file, ["a", "b"], 32, "pad", False, "m", None, "1")
    run(source, out, spec, beam_args=["--direct_running_mode=in_memory"])


def ingest(source: str, out: str, image_size: int) -> None:
    """The ingest step."""
    from components.ingest.core import IngestConfig
    from components.ingest.pipeline import run

    run(source, out, IngestConfig(image_size=image_size), ["--direct_running_mode=in_memory"])


def main() -> None:
    """Arm the kill point, then run the named step with the JSON arguments."""
    point, step, arguments = sys.argv[1:4]
    if point != "none":
        arm(point)
    {"tag": tag, "ingest": ingest}[step](**json.loads(arguments))
    if point != "none":
        raise SystemExit("the step finished without reaching its kill point")


if __name__ == "__main__":
    main()
