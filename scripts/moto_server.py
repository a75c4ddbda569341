"""moto's server, one request at a time.

`moto_server` serves requests on threads, and moto's DynamoDB is not safe for that: concurrent
TransactWriteItems calls fail with "dictionary changed size during iteration" (an HTTP 500), which
real DynamoDB never does. Serialising requests costs little, since moto holds the GIL anyway.
Usage: python scripts/moto_server.py HOST PORT
"""
import sys

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler

host, port = sys.argv[1], int(sys.argv[2])
run_simple(host, port, DomainDispatcherApplication(create_backend_app), threaded=False,
           request_handler=MotoRequestHandler)
