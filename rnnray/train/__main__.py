import sys

from .command import main

main(sys.argv[1:])
