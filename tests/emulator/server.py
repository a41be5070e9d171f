"""Starts the AWS emulator that ecr-audit's tests and demo talk to.

It is moto's threaded server with the extension in `ecr_emu` in front of it
(see docs/EMULATOR.md). `scripts/services up` runs it as
`.venv/bin/python tests/emulator/server.py --host 127.0.0.1 --port PORT` and
waits for `GET /moto-api/` to answer.
"""
import argparse

from werkzeug.serving import make_server

from ecr_emu import create_app
from moto.moto_server.werkzeug_app import MotoRequestHandler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    server = make_server(args.host, args.port, create_app(), threaded=True, request_handler=MotoRequestHandler)
    print(f"ecr-audit AWS emulator listening on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
