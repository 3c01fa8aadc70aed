"""`python -m crm_genesys.sync apply ...` (see `crm_genesys.sync.cli`)."""

import sys

from crm_genesys.sync.cli import main

sys.exit(main())
