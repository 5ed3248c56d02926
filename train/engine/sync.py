"""``cnnbench sync FILE...``: replay the writes a run kept (``train.engine.outbox``) into its MLflow store."""
from __future__ import annotations

from pathlib import Path

from train.engine.config import OneLineErrorParser
from train.engine.outbox import OUTBOX_NAME, Outbox, read_outbox
from train.engine.tracking import open_store
from train.errors import UsageError


def main(argv: list[str] | None = None, prog: str = "cnnbench sync") -> int:
    """``cnnbench sync FILE...``: replay the writes a run could not deliver into its MLflow store."""
    parser = OneLineErrorParser(prog=prog, description=(
        f"Replay into its MLflow store the writes a run could not deliver while its tracking server was away: the "
        f"{OUTBOX_NAME} file next to the run's checkpoints. Writes the store already holds are not applied again, "
        f"and an older status never overwrites a later one."))
    parser.add_argument("files", nargs="+", type=Path, help=f"{OUTBOX_NAME} files, next to the runs' checkpoints")
    parser.add_argument("--tracking-uri", help="deliver to this store instead of the one the run used")
    args = parser.parse_args(argv)
    for path in args.files:
        header, writes = read_outbox(path)
        uri = args.tracking_uri or header["uri"]
        box = Outbox(open_store(uri), uri, header["run_id"])
        # what is delivered leaves the file, an empty queue removes it; what the store holds already is left out
        if not box.adopt(path):
            raise UsageError(f"{uri} does not answer ({box.last_problem}): {len(box.pending)} of the {len(writes)} "
                             f"writes of {path} stay there; try again later")
        print(f"{path}: {len(writes)} writes replayed into run {header['run_id']} in {uri}")
    return 0
