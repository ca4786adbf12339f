"""`python factory/run.py CONFIG [key=value ...]`: the entry point for `ray job submit`.

    ray job submit --working-dir . -- python factory/run.py configs/demo.yaml

Inside a Ray job, RAY_ADDRESS is set, so the run joins that cluster instead of starting one.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the working directory's packages importable
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # not factory/ itself

from factory.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
