"""Where the work runs: the quiet console (Ray's routine lines off the screen), the machine (its
matmul rate, the device Ray's assignment leads to) and the Ray resources a request becomes."""
