"""`python -m crm_genesys.emulator serve --port 0 ...`"""

import sys

from crm_genesys.emulator.cli import main

sys.exit(main())
