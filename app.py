"""moechat as a Hugging Face Space or `python app.py [--model ...] [--port N]` (see --help): the app itself is
moechat.app, also installed as the `moechat-app` command."""

import sys

from moechat.app import main

if __name__ == "__main__":
    sys.exit(main())
