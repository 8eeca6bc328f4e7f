"""Stand-in for the get-pip.py that ansible-test downloads (unreachable here).

ansible-test runs it in a fresh virtualenv as `get_pip_<version>.py [pip options] pip==<version>
--no-setuptools --no-wheel`; it installs pip from the wheel `make sanity` put beside it.
"""

import glob
import os
import runpy
import sys

here = os.path.dirname(os.path.abspath(__file__))
wheels = sorted(glob.glob(os.path.join(here, "pip-*.whl")))
if not wheels:
    sys.exit(f"no pip wheel next to {__file__}: run `make sanity`, which downloads it")
sys.path.insert(0, wheels[-1])
arguments = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.argv = ["pip", "install", "--no-index", "--find-links", here, *arguments]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
