import sys

from biomtl.cli import main

if __name__ == "__main__":  # not when a spawned process (biomtl serve's model) imports it
    sys.exit(main())
