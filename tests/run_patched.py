# SPDX-License-Identifier: MIT
"""Run the whole suite again in a process that called gevent.monkey.patch_all() first.

    python tests/run_patched.py [pytest arguments]

Part of the README's test command: the library must behave the same in a
monkey-patched process (threads become greenlets) as in a plain one.
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

import pytest  # noqa: E402

if __name__ == "__main__":
    sys.exit(pytest.main(["-q", *sys.argv[1:]]))
