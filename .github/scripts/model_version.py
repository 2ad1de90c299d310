"""Print a registered model version, for image tags (`make push-image`, `make retag-image`).

    model_version.py --model-dir models/export   the version registered from this export
    model_version.py --alias champion            the version an alias points to

The export is matched by its pipeline run id (``lineage.run_id`` of ``model.json``, which
``pipeline.registry`` records in the ``pipeline_run_id`` tag), so the tag names the version that
holds exactly the model baked into the image. The store is the pipeline's: ``MLFLOW_TRACKING_URI``
or the embedded ``mlruns/``; the model name is ``registry.model_name`` in ``params.yaml`` (``auto``:
named after the data, see ``pipeline.registry.model_name``).
Exits 1 with one line on stderr when there is no such version.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def registered_version(client, name: str, model_dir: Path) -> str:
    from model_spec.descriptor import DescriptorError, ModelDescriptor
    from pipeline.registry import RUN_ID_TAG

    try:
        run_id = ModelDescriptor.read(model_dir).lineage.run_id
    except DescriptorError as exc:
        raise LookupError(f"model descriptor: {exc}") from None
    found = client.search_model_versions(f"name = '{name}' and tags.{RUN_ID_TAG} = '{run_id}'")
    if not found:
        raise LookupError(
            f"the export in '{model_dir}' (run {run_id}) is not a version of '{name}'; "
            "run `make register` first."
        )
    return str(found[0].version)


def alias_version(client, name: str, alias: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        raise LookupError(f"model '{name}' has no '@{alias}' alias in the registry.") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model-dir", type=Path, help="an exported model directory")
    which.add_argument("--alias", help="a registry alias, e.g. champion")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)

    import mlflow

    from pipeline.config import load_params
    from pipeline.registry import model_name
    from pipeline.tracking import tracking_uri

    name = model_name(load_params(args.params))
    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    try:
        if args.model_dir is not None:
            version = registered_version(client, name, args.model_dir)
        else:
            version = alias_version(client, name, args.alias)
    except (LookupError, FileNotFoundError) as exc:
        print(f"model_version: {exc}", file=sys.stderr)
        return 1
    print(version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
