"""``cnnbench sync FILE...``: replay the writes a run kept (``train.engine.outbox``) into its MLflow store."""
from __future__ import annotations

from pathlib import Path

from train.engine.config import OneLineErrorParser
from train.engine.outbox import OUTBOX_NAME, Outbox, is_store_error, read_outbox
from train.engine.tracking import open_store, planned_epochs
from train.errors import UsageError


def main(argv: list[str] | None = None, prog: str = "cnnbench sync") -> int:
    """``cnnbench sync FILE...``: replay the writes a run could not deliver into its MLflow store."""
    parser = OneLineErrorParser(prog=prog, description=(
        f"Replay into its MLflow store the writes a run could not deliver while its tracking server was away: the "
        f"{OUTBOX_NAME} file next to the run's checkpoints. The whole file is checked before anything is written; "
        f"writes the store already holds are not applied again, and an older status never overwrites a later one."))
    parser.add_argument("files", nargs="+", type=Path, help=f"{OUTBOX_NAME} files, next to the runs' checkpoints")
    parser.add_argument("--tracking-uri", help="deliver to this store instead of the one the run used")
    args = parser.parse_args(argv)
    for path in args.files:
        header, writes = read_outbox(path)
        uri = args.tracking_uri or header["uri"]
        box = Outbox(open_store(uri), uri, header["run_id"])
        read_outbox(path, _epochs(box, writes))  # checked whole against the run's schedule before any write
        # what is delivered leaves the file, an empty queue removes it; what the store holds already is left out
        if not box.adopt(path):
            raise UsageError(f"{uri} does not answer ({box.last_problem}): {len(box.pending)} of the {len(writes)} "
                             f"writes of {path} stay there; try again later")
        print(_replayed(path, box, len(writes)))
    return 0


def _epochs(box: Outbox, writes: list[dict]) -> int | None:
    """The run's planned epochs, counting a resume the file itself records; None where the store cannot show the
    run (delivering its first write then meets the same answer, and says so)."""
    try:
        run = box.client.get_run(box.run_id)
    except Exception as err:
        if not is_store_error(err):
            raise
        return None
    tags = {k: v for write in writes if write["kind"] == "batch" for k, v in write["tags"].items()}
    return planned_epochs(run.data.params, {**run.data.tags, **tags})


def _replayed(path: Path, box: Outbox, total: int) -> str:
    line = f"{path}: {box.applied} writes replayed into run {box.run_id} in {box.uri}"
    if box.applied < total:
        line = (f"{path}: {box.applied} of {total} writes replayed into run {box.run_id} in {box.uri} "
                f"(the store held the rest, or a later status)")
    if box.not_applied:
        line += f"; not applied, the run holds another value: {', '.join(box.not_applied)}"
    return line
