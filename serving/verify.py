"""Load a model directory and check its golden examples, in a process of its own.

    python -m serving.verify MODEL_DIR

Exit status 0 when the model is fit to serve, 2 when it cannot be loaded, 3 when it does not
reproduce its golden examples; the reason is the last line on stderr. The launcher
(``serving.server``) uses this to vet a registry version before publishing it: ONNX Runtime must not
be imported in a process that forks workers (a child forked after ``import onnxruntime`` hangs or
aborts when it exits), so the launcher never loads a model itself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_LOAD, EXIT_GOLDEN = 2, 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    args = parser.parse_args(argv)

    from serving.config import ServingConfig
    from serving.model import GoldenMismatch, ModelError, load_model

    try:
        model = load_model(args.model_dir, ServingConfig.from_env(model_dir=args.model_dir))
    except GoldenMismatch as exc:
        print(exc, file=sys.stderr)
        return EXIT_GOLDEN
    except ModelError as exc:
        print(exc, file=sys.stderr)
        return EXIT_LOAD
    print(f"{model.name}: {model.golden_rows} golden rows reproduced")
    return 0


if __name__ == "__main__":
    sys.exit(main())
