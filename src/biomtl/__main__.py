import sys

from biomtl.cli import main

sys.exit(main())
