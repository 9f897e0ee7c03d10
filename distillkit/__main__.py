import sys

from distillkit.cli import main

sys.exit(main())
