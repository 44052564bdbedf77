"""`python -m onbehalf.demo.tickets [--host H] [--port P]`: the same as `onbehalf tickets-mcp`."""

import sys

from onbehalf.cli import main

if __name__ == "__main__":
    sys.exit(main(["tickets-mcp", *sys.argv[1:]]))
