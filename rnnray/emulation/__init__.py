"""The emulation objective's pieces, below the training loop: the emulator and its loss
(:mod:`.emulator`), the task splits (:mod:`.splits`) and the training and evaluation batches drawn
from a zoo's snapshots with keyed randomness (:mod:`.batches`)."""
