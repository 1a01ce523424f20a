"""Puts this folder on ``sys.path`` so the deploy tests share ``deploy_files.py`` (the files under
deploy/ and small readers for them) with a plain import."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
