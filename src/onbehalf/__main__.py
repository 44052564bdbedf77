"""`python -m onbehalf` is the `onbehalf` command."""

import sys

from onbehalf.cli import main

sys.exit(main())
