# SPDX-License-Identifier: AGPL-3.0-or-later
"""gunicorn for the WhatsApp bridge (``WHISTLE_INTERFACE=whatsapp``, docs/whatsapp.md):

    gunicorn -c deploy/gunicorn-whatsapp.conf.py wsgi:app

Everything of deploy/gunicorn.conf.py (whistle's worker with its deadlines, no access log, no
addresses, no time of day, no Server header), with three differences:

* one worker process, whatever WHISTLE_WORKERS says (it is for the other interfaces): the
  bridge keeps the ciphertext spools of unfinished conversations' media and the secret that
  keys its conversation state in its own memory (whistle/server/whatsapp/store.py), so a
  second process would not find them (raise WHISTLE_WHATSAPP_THREADS instead);
* its own default address, 127.0.0.1:8082, behind the HTTPS reverse proxy that Meta reaches;
* it refuses to start for any other interface.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

if (os.environ.get("WHISTLE_INTERFACE", "").strip() or "all") != "whatsapp":
    print("whistle: refusing to start: gunicorn-whatsapp.conf.py serves WHISTLE_INTERFACE=whatsapp "
          "only (the other interfaces use deploy/gunicorn.conf.py)", file=sys.stderr)
    raise SystemExit(1)

# The shared settings, as if this file were deploy/gunicorn.conf.py, then the differences.
globals().update({name: value for name, value in
                  runpy.run_path(str(Path(__file__).with_name("gunicorn.conf.py"))).items()
                  if not name.startswith("__")})
bind = [os.environ.get("WHISTLE_BIND", "").strip() or "127.0.0.1:8082"]
workers = 1
