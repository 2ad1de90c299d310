"""Share DVC's run cache so that another clone's ``dvc repro --pull`` trains nothing.

    python deploy/run_cache.py push [--skip STAGE ...]   # before `dvc push --run-cache`

``make ci-dvc-push`` calls this, then ``dvc push --run-cache``. DVC 3.67 alone restores only the
stages whose outputs it caches, for two reasons this module works around:

- ``dvc repro`` keeps no run-cache entry for a stage with a ``cache: false`` output that is not
  a metric or a plot (``evaluate``'s ``reports/plots`` directory, committed to git for
  ``dvc plots diff``). For every stage that is up to date in the workspace this records the
  entry DVC would have written (``StageCache.save``, which also copies the ``cache: false``
  outputs into the local cache, as DVC does for metrics and plots).
- ``dvc push --run-cache`` sends the entries but none of the objects of their ``cache: false``
  outputs (``reports/metrics.json``, ``reports/train_history.csv``, the plots), so a clone
  without the ``dvc.lock`` cannot check them out and reruns ``train`` and ``evaluate``. This
  pushes the objects of every entry whose outputs are all in the local cache.

Stages that DVC never restores from the run cache stay as they are: ``ingest`` (always
changed: only reading ``data.source`` tells) and ``export`` (``persist``: a failed export keeps
the last good one). ``--skip`` names stages never to record: the Makefile skips ``gate``, whose
verdict depends on the registry's ``@champion``, which DVC cannot see.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _record(repo, skip: set[str]) -> list[str]:
    """Write the run-cache entries of the up-to-date stages DVC left without one."""
    from dvc.stage.cache import _can_hash

    recorded = []
    for stage in repo.index.stages:
        name = getattr(stage, "name", None)
        if name is None or name in skip:
            continue
        # changed() first: a stage whose dependencies are missing (monitoring/dvc.yaml without
        # the server's logs) is changed, and _can_hash would fail hashing them
        if stage.changed() or not _can_hash(stage):
            continue
        repo.stage_cache.save(stage)
        recorded.append(name)
    return recorded


def _entries(repo) -> list[tuple[str, str]]:
    runs = Path(repo.stage_cache.cache_dir)
    return sorted((p.parent.name, p.name) for p in runs.glob("*/*/*") if p.is_file())


def _push_objects(repo, remote: str | None) -> tuple[int, int]:
    """Push every object the local run-cache entries name; returns (entries, objects sent)."""
    from collections import defaultdict

    cache = repo.stage_cache
    objs: dict = defaultdict(set)
    complete = 0
    for key, value in _entries(repo):
        entry = cache._load_cache(key, value)
        if not entry:
            continue
        stage = cache._create_stage(entry)
        # an old entry whose outputs were garbage-collected here cannot be restored anywhere
        if not stage.outs_cached():
            continue
        complete += 1
        for odb, hashes in stage.get_used_objs(remote=remote).items():
            objs[odb].update(hashes)
    sent = 0
    for hashes in objs.values():
        result = repo.cloud.push(hashes, remote=remote)
        if result.failed:
            names = sorted(h.obj_name or h.value for h in result.failed)
            raise SystemExit(
                f"run_cache: {len(result.failed)} object(s) of the run cache did not reach the "
                f"DVC remote: {', '.join(names[:10])}. Check the remote's keys "
                "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and `dvc remote list`, then rerun "
                "make ci-dvc-push."
            )
        sent += len(result.transferred)
    return complete, sent


def push(remote: str | None, skip: set[str]) -> str:
    from dvc.repo import Repo

    with Repo() as repo:
        with repo.lock:
            recorded = _record(repo, skip)
        entries, sent = _push_objects(repo, remote)
    return (
        f"run_cache: recorded {', '.join(recorded) or 'no stage'}; "
        f"{entries} complete run-cache entries, {sent} object(s) of their outputs pushed"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/run_cache.py", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("push", help="record the missing entries and push their objects")
    p.add_argument("--remote", default=None, help="DVC remote (default: the default remote)")
    p.add_argument("--skip", nargs="*", default=[], help="stages never to record")
    args = parser.parse_args(argv)
    from dvc.exceptions import DvcException

    try:
        print(push(args.remote, set(args.skip)))
    except DvcException as exc:
        print(f"run_cache: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
