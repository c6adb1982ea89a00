"""`gallerytag review`: the review page, and Label Studio export / import.

`gallerytag review FOLDER` is `gallerytag review serve FOLDER`."""

from __future__ import annotations

import getpass
import json

import click

from components.common import storage

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServeByDefault(click.Group):
    """A group whose first argument, when it is not a sub-command, is serve's FOLDER."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Insert `serve` before a folder argument (or serve's options)."""
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["serve", *args]
        return super().parse_args(ctx, args)


@click.group(cls=ServeByDefault)
def review() -> None:
    """Review uncertain tags or label-noise suspects in a local web page.

    FOLDER is the --out of `gallerytag tag` (its review.jsonl) or of `gallerytag evaluate`
    (its suspects.jsonl); decisions go to FOLDER/corrections.jsonl."""


@review.command()
@click.argument("folder")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs --token.")  # fmt: skip
@click.option("--port", default=8765, show_default=True, help="Port to listen on (0: any free).")
@click.option("--token", envvar="GALLERYTAG_REVIEW_TOKEN", default=None,
              help="Secret every request must carry (open the page with ?token=...); "
              "required beyond loopback. Also read from GALLERYTAG_REVIEW_TOKEN.")  # fmt: skip
@click.option("--reviewer", default=None, help="Name recorded with each decision [login name].")
@click.option("--corrections", "corrections_path", default=None,
              help="Local corrections log [FOLDER/corrections.jsonl]; needed for a gs:// "
              "FOLDER.")  # fmt: skip
def serve(
    folder: str,
    host: str,
    port: int,
    token: str | None,
    reviewer: str | None,
    corrections_path: str | None,
) -> None:
    """Serve the review page for FOLDER until interrupted."""
    import socket

    import uvicorn

    from components.review.app import create_app
    from components.review.log import CorrectionsLog
    from components.review.queue import load_queue
    from components.review.session import ReviewSession

    loopback = host in LOOPBACK
    if not loopback and not token:
        raise click.UsageError(
            f"--host {host} would let other machines decide tags; pass --token SECRET "
            "(or set GALLERYTAG_REVIEW_TOKEN) so every request must carry it"
        )
    queue = load_queue(folder)
    log = CorrectionsLog(corrections_path or queue.corrections_path)
    session = ReviewSession(queue, log, reviewer or getpass.getuser())
    app = create_app(session, token=token, loopback=loopback)
    # Bind first, so port 0 can report the real port before serving.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts: no start-up race
    shown = f"[{host}]" if ":" in host else host
    query = "?token=..." if token else ""
    counts = session.counts()
    click.echo(
        f"review: {counts['left']} of {counts['total']} {queue.kind} rows left, "
        f"decisions to {log.path}"
    )
    click.echo(f"review: serving http://{shown}:{sock.getsockname()[1]}/{query}", err=False)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])


@review.command("export")
@click.argument("folder")
@click.option("--format", "fmt", type=click.Choice(["label-studio"]), default="label-studio",
              show_default=True, help="Task format to write.")  # fmt: skip
@click.option("--out", required=True, help="Tasks JSON file to write (local or gs://).")
@click.option("--corrections", "corrections_path", default=None,
              help="Skip images already decided here [FOLDER/corrections.jsonl if "
              "present].")  # fmt: skip
def export(folder: str, fmt: str, out: str, corrections_path: str | None) -> None:
    """Write FOLDER's undecided queue as Label Studio tasks with the model's predictions,
    and the matching labelling config beside it (OUT with .xml)."""
    from components.common import corrections
    from components.review.labelstudio import export_tasks, label_config
    from components.review.queue import load_queue

    queue = load_queue(folder)
    path = corrections_path or queue.corrections_path
    decided = set(corrections.latest_by_uri(corrections.read_rows(path))) if (
        storage.exists(path)
    ) else set()  # fmt: skip
    tasks = export_tasks(queue, decided)
    storage.write_text(out, json.dumps(tasks, indent=2))
    config = out.rsplit(".", 1)[0] + ".xml"
    storage.write_text(config, label_config(queue.labels))
    click.echo(f"review export: {len(tasks)} tasks to {out}, labelling config {config}")


@review.command("import")
@click.argument("export_file")
@click.option("--out", required=True, help="corrections.jsonl to write (local or gs://).")
def import_(export_file: str, out: str) -> None:
    """Read a Label Studio JSON export (tasks with annotations) as corrections rows, for
    `gallerytag ingest --corrections`."""
    from components.review.labelstudio import import_export

    tasks = json.loads(storage.read_text(export_file))
    rows = import_export(tasks, export_file)
    storage.write_text(out, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    skipped = len(tasks) - len(rows)
    click.echo(
        f"review import: {len(rows)} decisions from {export_file} to {out}; {skipped} "
        "task(s) without a (non-cancelled) choice skipped"
    )
