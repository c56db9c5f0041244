"""``python -m rnnray.sweep SWEEP.yaml``: the main job (:mod:`rnnray.job`)."""

import sys

from rnnray.job import main

main(sys.argv[1:])
