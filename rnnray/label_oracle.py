"""``python -m rnnray.label_oracle SWEEP.yaml``: the label oracles of a sweep's zoo and settings
(the work is :mod:`rnnray.analysis.oracles`; this module is only the command)."""

import sys

from .analysis.oracles import main

if __name__ == "__main__":
    sys.exit(main())
