import sys

from dfhost.runtime.workers.process import main

sys.exit(main())
