import sys

from symzoo.cli import main

sys.exit(main())
