"""data.stage across ranks: each node's local rank 0 copies the data files to node-local storage while
the node's other ranks wait, every rank learns which nodes staged, and the copies go at the end.

The copying itself is hpcgan/data/stage.py. Here: who copies (local rank 0 of each node, all nodes at
once, every rank polling in short collectives meanwhile so a long copy trips no stall timeout), and one
decision per node: a node reads its copies only when its copier made them and every one of its ranks
sees them; otherwise the whole node reads in place. Nodes may decide differently: which path a rank
opens changes no collective, and the dataset fingerprint names the files as given, so ranks still agree.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

from hpcgan.config import Config
from hpcgan.data import stage
from hpcgan.data.reader import resolve_paths
from hpcgan.runtime.backend import Backend


def node_decisions(reports: list[tuple[int, bool, bool]]) -> dict[int, bool]:
    """{node: read the copies?} from every rank's (node, is its node's copier, sees the copies).

    True only for a node with exactly one copier whose ranks all see the copies: a launcher that
    misreports nodes (two local rank 0s, or none) makes that node read in place, never guess."""
    copiers: dict[int, int] = {}
    all_ok: dict[int, bool] = {}
    for node, copier, ok in reports:
        copiers[node] = copiers.get(node, 0) + int(copier)
        all_ok[node] = all_ok.get(node, True) and ok
    return {node: copiers[node] == 1 and all_ok[node] for node in all_ok}


@contextlib.contextmanager
def staged_data(cfg: Config, backend: Backend, log: Callable[[str], None]) -> Iterator[dict[str, str]]:
    """Collective. Yields {source file: node-local copy} for this rank's node ({} when data.stage is off or
    the node reads in place) and removes the copies on leaving, also after an error or a preemption exit."""
    if not cfg.data.stage:
        yield {}
        return
    info = backend.info
    copier = info.local_rank == 0
    sources = list(dict.fromkeys(p for path in (cfg.data.path, cfg.data.val_path) if path
                                 for p in resolve_paths(path)))
    base, _ = stage.stage_base(cfg.data.stage_dir, os.environ)
    made: list[stage.Staged] = []
    backend.run_where_given((lambda: made.append(stage.stage_files(sources, base))) if copier else None)
    mine = made[0] if made else None
    try:
        reports = backend.allgather_object((info.node_rank, copier, mine))
        node = [st for n, c, st in reports if c and n == info.node_rank]
        copies = node[0].copies if len(node) == 1 else {}
        ok = bool(copies) and (copier or stage.visible(copies))
        decisions = node_decisions(backend.allgather_object((info.node_rank, copier, ok)))
        if not decisions[info.node_rank]:
            copies = {}
            if mine is not None:
                stage.remove(mine.root)
        _report(reports, decisions, len(sources), log)
        yield copies
    finally:
        if mine is not None:
            stage.remove(mine.root)


def _report(reports: list, decisions: dict[int, bool], n_files: int, log: Callable[[str], None]) -> None:
    """One line for the staged nodes, one notice per distinct reason a node reads in place."""
    staged = {n: st for n, c, st in reports if c and decisions[n]}
    if staged:
        first = staged[min(staged)]
        log(f"data.stage: {n_files} file(s), {first.nbytes / 2**20:.1f} MiB copied and verified on each of "
            f"{len(staged)} node(s) in at most {max(st.seconds for st in staged.values()):.1f} s "
            f"(node {min(staged)}: {first.root})")
    reasons: dict[str, list[int]] = {}
    for n in sorted(n for n, ok in decisions.items() if not ok):
        st = next((st for m, c, st in reports if c and m == n), None)
        reason = (st.notice if st is not None and st.notice
                  else "its ranks do not all see one copier's files (does the launcher report nodes right?)")
        reasons.setdefault(reason, []).append(n)
    for reason, nodes in reasons.items():
        log(f"notice: data.stage: node(s) {', '.join(map(str, nodes))} read the data in place: {reason}")
