import sys

from hpcm.cli.main import main

sys.exit(main())
