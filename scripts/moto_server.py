"""moto's server, one request at a time, with cheap copies of DynamoDB streams.

`moto_server` serves requests on threads, and moto's DynamoDB is not safe for that: concurrent
TransactWriteItems calls fail with "dictionary changed size during iteration" (an HTTP 500), which
real DynamoDB never does. Serialising requests costs little, since moto holds the GIL anyway.

Each TransactWriteItems deep-copies the tables it touches so that it can roll back, stream records
included, which makes a table with a stream slower with every write. Stream records never change
once written, so the copy here shares them and copies only the list. A rollback swaps in the copied
table, whose stream shard is a new object: stream readers hold iterators over the old one and
would see nothing more. After a rollback the old shard is put back, holding the restored records.
Usage: python scripts/moto_server.py HOST PORT
"""
import copy
import sys

from werkzeug.serving import run_simple

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import StreamShard
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler


def _copy_shard(self, memo):
    clone = copy.copy(self)
    memo[id(self)] = clone
    clone.table = copy.deepcopy(self.table, memo)
    clone.items = list(self.items)
    return clone


StreamShard.__deepcopy__ = _copy_shard
_transact_write_items = DynamoDBBackend.transact_write_items


def _transact_keeping_shards(self, transact_items):
    shards = {name: t.stream_shard for name, t in self.tables.items() if t.stream_shard is not None}
    try:
        return _transact_write_items(self, transact_items)
    finally:
        for name, shard in shards.items():
            table = self.tables.get(name)
            if table is not None and table.stream_shard is not shard:
                shard.items = table.stream_shard.items
                shard.table = table
                table.stream_shard = shard


DynamoDBBackend.transact_write_items = _transact_keeping_shards

host, port = sys.argv[1], int(sys.argv[2])
run_simple(host, port, DomainDispatcherApplication(create_backend_app), threaded=False,
           request_handler=MotoRequestHandler)
