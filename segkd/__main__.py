import sys

from segkd.cli import main

sys.exit(main())
