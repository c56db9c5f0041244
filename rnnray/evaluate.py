"""``python -m rnnray.evaluate RESULTS_DIR``: the downstream evaluation of a sweep's best encoders
(the work is :mod:`rnnray.analysis.evaluate`; this module is only the command)."""

import sys

from .analysis.evaluate import main

if __name__ == "__main__":
    main(sys.argv[1:])
