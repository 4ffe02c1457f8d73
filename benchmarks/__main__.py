"""`python -m benchmarks --help`: see benchmarks.harness."""

import sys

from benchmarks.harness import main

if __name__ == "__main__":
    sys.exit(main())
