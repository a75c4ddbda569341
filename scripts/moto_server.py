"""moto's server for the local stack: one request at a time, with memory that stays bounded.

Usage: python scripts/moto_server.py HOST PORT

Stock moto 5 cannot serve a working day of this project's traffic. Measured with
`benchmarks/moto-memory.py` (BENCHMARKS.md, "moto's memory"), its process grew by about 200 MB
for every 1,000 reference transactions and each transaction got slower as the tables grew, for
these reasons, each fixed here by one function below:

1. `serve_one_request_at_a_time`: moto's DynamoDB is not thread-safe (concurrent
   TransactWriteItems fail with "dictionary changed size during iteration", an HTTP 500 that real
   DynamoDB never gives). Serialising costs little, since moto holds the GIL anyway.
2. `stop_tracking_instances`: moto keeps every model object it ever creates in a class-level list
   (`instances_tracked`, for its web dashboard, which the stack does not use), so nothing it makes
   is ever freed: not a stream record, not a shard iterator, not a table copy.
3. `roll_back_with_an_undo_log`: TransactWriteItems deep-copies a touched table once for each of
   its items, so that it can swap the copy in if the transaction is cancelled. With (2) every
   copy stayed alive; without it each transaction still costs time in proportion to the whole
   table. Here the transaction snapshots only the items it touches and the length of each touched
   stream, and a cancelled one puts those items back and drops the stream records it emitted.
   The table and its stream shard stay the same objects, so stream iterators keep working.
4. `expire_iterators_and_trim_streams`: every GetRecords call returns a new shard iterator, and
   moto keeps them all; stream records are kept forever. As in DynamoDB, an iterator now expires
   15 minutes after it was issued (`MOTO_SHARD_ITERATOR_TTL` seconds), and records that every
   unexpired iterator of the shard has passed are dropped (DynamoDB drops them after 24 hours).
   A shard nobody has read keeps its records, so a stream reader that starts late (the gateway
   started after the tables had traffic) still sees everything. Each shard keeps its readers' positions
   in a heap, so this housekeeping costs a pop per expired iterator, not a pass over all of them
   (a pass over the 15 minutes' iterators, one per GetRecords, took 10 % of moto's time in the soak).
5. `query_one_partition`: moto answers a Query by listing and sorting every item of the table,
   so each one costs time in proportion to the table (found by `scripts/soak`: on a growing deck,
   reference writes went from 0.1 s to over 1 s at the median in 17 minutes). A Query on the
   table's own key now reads only its partition, and a page of it starts at its start key
   instead of walking the partition up to it; one on an index, one pass without the sort.
6. `attribute_values_as_they_are`: moto 5.2 writes every answer through a generic serializer that
   walks botocore's model for each value, trying every member of the `AttributeValue` union
   under several spellings: 2 ms per item for a Query and 4 ms per item for a BatchGetItem,
   so listing a 10,000-file deck took 20–27 s (found by the client's benchmark). Attribute
   values are already in their wire form when they get there; they are now written as they are,
   binary values base64-encoded as the serializer would.
7. `plain_values_first`: what remained of a listing's time was moto measuring every item's size
   (for the 1 MB and 16 MB answer limits, and on every attribute write) and converting every
   value for the serializer, each through a chain of type tests made for nested values. Strings
   and numbers, nearly all of what this project stores, now take the short way; nested values
   take moto's.
8. `copy_and_project_plain_values`: a Query deep-copies every item of its page before filtering it,
   and a projection (`ProjectionExpression`, or an index's) turned each item into plain Python
   values and back through boto3's (de)serializer: of a whole-deck listing through the API, 34 %
   of moto's time was projecting the BatchGetItem answers and 18 % copying Query pages (py-spy).
   Items whose values are strings and numbers are now copied, and projected onto top-level names,
   directly; anything else takes moto's way.
9. `scan_from_the_start_key`: a Scan sorted the whole table by comparing moto's value objects, and
   each page walked it from the start up to its start key; a sweep's Scan of the media table held
   the one-request-at-a-time server for seconds (p99 spikes on every route in `scripts/soak`).
   Now the table is sorted on plain keys and each page begins right after its start key.
10. `list_the_package_once`: moto listed its own package directory on every request to find the
   request's backend (8 % of its time in the soak); it is listed once.
11. `scan_in_short_pages`: a Scan page runs to 1 MB of items, and the one-request-at-a-time
   server answers nothing else meanwhile: in `scripts/soak`, a grace-0 sweep's Scan of a media
   table of 11,000 records took 3.8 s and put 1–2 s on the p99 of every route in its minute (the
   last ten minutes' p99 1.8–2.9× the first's). A page now evaluates at most
   `MOTO_SCAN_PAGE_ITEMS` items (100) unless the request asks for fewer, as DynamoDB may end a
   page early: callers follow `LastEvaluatedKey` either way, and other requests get in between.
   (500 at first; the hour-long soak's downloads still waited behind a page of the last sweeps,
   so 100, which with fix 9's kept order costs 8 ms a page at 11,000 items.)
12. `keep_items_by_value`: a Query on an index still took one pass over the whole table (fix 5),
   so the writes that ask an index grew slower all day: settling or refreshing a quota hold asks
   the `pending` index, removing a deck file asks `by_file` (in a 20-minute soak, upload p99
   2.4× and reference p99 1.9× between the first and last minutes; 17 → 95 ms per `pending`
   Query and 6 → 117 ms per `by_file` Query from 1,000 to 40,000 items). Each table now keeps its
   items' keys by the value of each attribute an index has been asked on, built once and brought
   up to date from the keys that writes touched since (`ItemsByValue`).
13. `IdempotentTransactions`: moto ignores a TransactWriteItems' `ClientRequestToken`, so an SDK
   retry after a lost answer (an attempt timed out while this one-at-a-time server was busy)
   ran the transaction twice, and the second run, refused by its own conditions, told the
   caller it had failed although it had been applied. As in DynamoDB, a token that succeeded
   answers the same request again, for 10 minutes, without running it; the same token with
   another request is `IdempotentParameterMismatchException`.

Beside the fixes, `Meter` counts what DynamoDB would bill for the requests served (calls, items
read and written, per operation and table; `GET /_meter`, `DELETE /_meter` to start again), so that
the cost model in BENCHMARKS.md (`benchmarks/cost-model.py`) is computed from what the service
asked for, not from a reading of its code.

`tests/emulator/test_moto_server.py` checks that these keep moto's semantics: cancelled
transactions leave items and streams exactly as they were, with their cancellation reasons;
records arrive in order; readers keep seeing records after a rollback; memory stays flat.
"""
import base64
import bisect
import copy
import heapq
import io
import itertools
import json
import os
import sys
import time

from boto3.dynamodb.types import DYNAMODB_CONTEXT
from moto.core.common_models import BaseModel
from moto.core.exceptions import JsonRESTError
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
from moto.dynamodb.models.table import Table
from moto.dynamodbstreams.models import DynamoDBStreamsBackend, ShardIterator

# DynamoDB's shard iterators expire 15 minutes after they are issued.
SHARD_ITERATOR_TTL = float(os.environ.get("MOTO_SHARD_ITERATOR_TTL", 15 * 60))
# Items a Scan page evaluates at most (DynamoDB's own bound is 1 MB).
SCAN_PAGE_ITEMS = int(os.environ.get("MOTO_SCAN_PAGE_ITEMS", 100))
# Expired iterators are dropped, and streams trimmed, at most this often (seconds).
HOUSEKEEPING_INTERVAL = min(10.0, SHARD_ITERATOR_TTL / 2)
# Tests set this: every index Query also takes the one pass over the table and compares.
CHECK_INDEXES = os.environ.get("MOTO_CHECK_INDEXES") == "1"


def stop_tracking_instances():
    """Create moto's model objects without recording each one in a list that is never emptied."""

    def untracked_new(cls, *args, **kwargs):
        return object.__new__(cls)

    BaseModel.__new__ = staticmethod(untracked_new)


def roll_back_with_an_undo_log():
    """Make a cancelled TransactWriteItems restore only what it touched."""
    moto_transact = DynamoDBBackend.transact_write_items

    def share_instead_of_copying(table, memo):
        return table

    def transact_write_items(backend, transact_items):
        undo = UndoLog(backend, transact_items)
        # moto's own rollback copies each touched table; with this, its "copy" is the table itself
        # and its rollback (putting the copy back) changes nothing. The undo log does the work.
        Table.__deepcopy__ = share_instead_of_copying
        try:
            return moto_transact(backend, transact_items)
        except Exception:
            undo.roll_back()
            raise
        finally:
            del Table.__deepcopy__

    DynamoDBBackend.transact_write_items = transact_write_items


class UndoLog:
    """The items a transaction may write, as they were before it, and the length of each stream."""

    def __init__(self, backend, transact_items):
        self.items = []  # (table, hash key, range key or None, item copy or None, bucket existed)
        self.stream_lengths = {}  # table → number of stream records before the transaction
        for entry in transact_items:
            try:
                ((kind, op),) = entry.items()
                table = backend.tables[op["TableName"]]
                key = op["Item"] if kind == "Put" else op["Key"]
                hash_key = DynamoType(key[table.hash_key_attr])
                range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
            except (AttributeError, KeyError, TypeError, ValueError):
                continue  # moto refuses such an entry before it writes anything
            if range_key is None:
                existed, item = hash_key in table.items, table.items.get(hash_key)
            else:
                existed = hash_key in table.items
                item = table.items[hash_key].get(range_key) if existed else None
            self.items.append((table, hash_key, range_key, copy.deepcopy(item), existed))
            if table.stream_shard is not None:
                self.stream_lengths.setdefault(table, len(table.stream_shard.items))

    def roll_back(self):
        # Reversed, so that a key listed twice (which moto refuses) ends as it was first seen.
        for table, hash_key, range_key, item, existed in reversed(self.items):
            if range_key is None:
                if item is None:
                    table.items.pop(hash_key, None)
                else:
                    table.items[hash_key] = item
                continue
            bucket = table.items[hash_key]
            if item is None:
                bucket.pop(range_key, None)
            else:
                bucket[range_key] = item
            if not existed and not bucket:
                del table.items[hash_key]
        for table, length in self.stream_lengths.items():
            del table.stream_shard.items[length:]


class ExpiredIteratorException(JsonRESTError):
    def __init__(self):
        super().__init__("ExpiredIteratorException", "Iterator expired. The iterator was created more than 15 minutes ago.")


class TrimmedDataAccessException(JsonRESTError):
    def __init__(self):
        super().__init__("TrimmedDataAccessException", "The requested sequence number is beyond the trim horizon.")


def expire_iterators_and_trim_streams():
    """Shard iterators expire as DynamoDB's do, and stream records every reader has passed go.

    A shard's `starting_sequence_number` is where moto counts its records from, so dropping the
    first n records and adding n to it keeps every sequence number, TRIM_HORIZON and LATEST right.
    """
    moto_iterator_init = ShardIterator.__init__
    moto_get_shard_iterator = DynamoDBStreamsBackend.get_shard_iterator
    moto_get_records = DynamoDBStreamsBackend.get_records
    last_housekeeping = [time.monotonic()]
    shards_read = set()
    issued = itertools.count()  # ties in a heap are broken by issue order, never by iterators

    def iterator_init(iterator, *args, **kwargs):
        moto_iterator_init(iterator, *args, **kwargs)
        # moto keeps the request's string for AT_SEQUENCE_NUMBER; positions are compared below.
        iterator.sequence_number = int(iterator.sequence_number)
        iterator.issued_at = time.monotonic()
        # Each shard keeps its iterators' positions in a heap, so that finding the lowest position
        # a live iterator reads costs a pop per expired iterator, not a pass over all of them
        # (a reader issues one per GetRecords: tens of thousands in 15 minutes).
        shard = iterator.stream_shard
        if shard not in shards_read:
            shard.reader_positions = []
            shards_read.add(shard)
        heapq.heappush(shard.reader_positions, (iterator.sequence_number, next(issued), iterator))

    def get_shard_iterator(streams, arn, shard_id, shard_iterator_type, sequence_number=None):
        shard = streams._get_table_from_arn(arn).stream_shard
        if (shard is not None and sequence_number is not None
                and shard_iterator_type in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER")
                and int(sequence_number) < shard.starting_sequence_number):
            raise TrimmedDataAccessException()
        return moto_get_shard_iterator(streams, arn, shard_id, shard_iterator_type, sequence_number)

    def get_records(streams, iterator_arn, limit):
        now = time.monotonic()
        if now - last_housekeeping[0] >= HOUSEKEEPING_INTERVAL:
            last_housekeeping[0] = now
            housekeeping(streams, now)
        iterator = streams.shard_iterators.get(iterator_arn)
        if iterator is None or now - iterator.issued_at > SHARD_ITERATOR_TTL:
            streams.shard_iterators.pop(iterator_arn, None)
            raise ExpiredIteratorException()
        return moto_get_records(streams, iterator_arn, limit)

    def housekeeping(streams, now):
        # Iterators are kept in the order they were issued, so the expired ones come first.
        while streams.shard_iterators:
            arn, iterator = next(iter(streams.shard_iterators.items()))
            if now - iterator.issued_at <= SHARD_ITERATOR_TTL:
                break
            del streams.shard_iterators[arn]
        for shard in shards_read:
            heap = shard.reader_positions
            while heap and now - heap[0][2].issued_at > SHARD_ITERATOR_TTL:
                heapq.heappop(heap)
            if not heap:
                continue  # nobody reads this shard now: keep its records for a reader to come
            passed = min(heap[0][0] - shard.starting_sequence_number, len(shard.items))
            if passed > 0:
                del shard.items[:passed]
                shard.starting_sequence_number += passed

    ShardIterator.__init__ = iterator_init
    DynamoDBStreamsBackend.get_shard_iterator = get_shard_iterator
    DynamoDBStreamsBackend.get_records = get_records


def query_one_partition():
    """A Query on a table's own key reads that partition, not the whole table.

    moto answers every Query by listing and sorting all of the table's items (`all_items`) and
    then keeping those with the asked hash key, so each Query costs time in proportion to the
    table: on a 10,000-file deck every reference write and download page got slower as the day
    went on. Here a Query without an index sees only its partition, and one on an index sees the
    items with its key, found in one pass without sorting the table (settling a quota hold asks
    the quotas table's index for every processed upload).
    """
    moto_query = Table.query

    def equals(value):
        """`DynamoType.__eq__` against `value`, with strings compared directly (one pass of the
        index over a whole table makes this the Query's inner loop)."""
        if value.type == "S" and isinstance(value.value, str):
            raw = value.value
            return lambda attr: attr is not None and attr.type == "S" and attr.value == raw
        return lambda attr: attr is not None and attr == value

    def query(table, hash_key, *args, **kwargs):
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        start = kwargs.get("exclusive_start_key", args[3] if len(args) > 3 else None)
        forward = kwargs.get("scan_index_forward", args[4] if len(args) > 4 else True) is not False
        conditions = kwargs.get("hash_key_conditions") or []
        if index_name is None and hash_key is not None:
            bucket = table.items.get(hash_key)
            if bucket is None:
                candidates = []
            elif table.range_key_attr:
                # moto orders range keys by `cast_value` (DynamoType.__lt__); sorting by it directly
                # gives the same order without a Python call per comparison.
                candidates = sorted(bucket.values(), key=lambda item: item.range_key.cast_value)
                if start and table.range_key_attr in start:
                    # Paging: moto would walk every item up to the start key, so that each page
                    # cost the whole partition; begin right after it instead.
                    after = DynamoType(start[table.range_key_attr]).cast_value
                    keys = [item.range_key.cast_value for item in candidates]
                    if forward:
                        candidates = candidates[bisect.bisect_right(keys, after):]
                    else:
                        candidates = candidates[:bisect.bisect_left(keys, after)]
            else:
                candidates = [bucket]
        elif index_name is not None and len(conditions) == 1:
            ((name, value),) = conditions
            candidates = watcher(table, ItemsByValue).items_with(name, value)
            if CHECK_INDEXES:
                test = equals(value)
                expected = [item for item in every_item(table) if test(item.attrs.get(name))]
                if sorted(map(id, candidates)) != sorted(map(id, expected)):
                    raise AssertionError(f"the {name} map of {table.name} disagrees with the table")
        elif index_name is not None and conditions:
            # More than one key condition on an index: one pass, as before the maps.
            tests = [(name, equals(value)) for name, value in conditions]
            candidates = [item for item in every_item(table)
                          if all(test(item.attrs.get(name)) for name, test in tests)]
        else:
            return moto_query(table, hash_key, *args, **kwargs)
        table.all_items = lambda: candidates  # shadows the method for this call only
        try:
            return moto_query(table, hash_key, *args, **kwargs)
        finally:
            del table.all_items

    Table.query = query


def every_item(table):
    return (item for bucket in table.items.values()
            for item in (bucket.values() if table.range_key_attr else (bucket,)))


def item_at(table, hash_key, range_key):
    """The item under a key, or None."""
    bucket = table.items.get(hash_key)
    return bucket if range_key is None or bucket is None else bucket.get(range_key)


def watcher(table, cls):
    """The table's `cls` (`ItemsByValue`, `ScanOrder`): made on first use, then told by `touch`
    of every key written since."""
    watchers = table.__dict__.setdefault("_watchers", {})
    if cls not in watchers:
        watchers[cls] = cls(table)
    return watchers[cls]


def touch(table, hash_key, range_key):
    for w in table.__dict__.get("_watchers", {}).values():
        w.touched.add((hash_key, range_key))


class ItemsByValue:
    """A table's items by the value of an attribute an index is keyed on, kept as items change.

    An index Query used to take one pass over the whole table, so settling a quota hold (the
    `pending` index, once per upload and per processed file) and finding a file's notes (`by_file`)
    cost time in proportion to everything the day had written. The map is built by one pass on
    the first Query of an attribute; afterwards every write marks the key it touched (`touch`), and
    the next Query re-reads only those items. Keys, not items, are kept: `update_item` changes an
    item in place, and a cancelled transaction puts copies back.
    """

    def __init__(self, table):
        self.table = table
        self.keys = {}  # attribute → {value: {(hash key, range key)}}
        self.values = {}  # attribute → {(hash key, range key): value}
        self.touched = set()

    def items_with(self, name, value):
        if name not in self.keys:
            self.keys[name], self.values[name] = {}, {}
            for item in every_item(self.table):
                self._add(name, (item.hash_key, item.range_key), item)
        self._catch_up()
        found = (item_at(self.table, *key) for key in self.keys[name].get(value, ()))
        return [item for item in found if item is not None]

    def _add(self, name, key, item):
        value = item.attrs.get(name)
        if value is not None:
            self.keys[name].setdefault(value, set()).add(key)
            self.values[name][key] = value

    def _catch_up(self):
        touched, self.touched = self.touched, set()
        for key in touched:
            item = item_at(self.table, *key)
            for name, by_value in self.keys.items():
                old = self.values[name].pop(key, None)
                if old is not None:
                    same = by_value[old]
                    same.discard(key)
                    if not same:
                        del by_value[old]
                if item is not None:
                    self._add(name, key, item)


class ScanOrder:
    """A table's keys in Scan order (moto's: by `cast_value`), kept sorted as items come and go,
    so that a Scan page costs its own items rather than a sort of the whole table."""

    def __init__(self, table):
        self.table = table
        self.ranged = table.range_key_attr is not None
        self.order = sorted(self._entry(item.hash_key, item.range_key) for item in every_item(table))
        self.present = {entry[0] for entry in self.order}
        self.touched = set()

    def _entry(self, hash_key, range_key):
        plain = (hash_key.cast_value, range_key.cast_value) if self.ranged else hash_key.cast_value
        return plain, hash_key, range_key

    def page(self, after, count):
        """Up to `count` items (None: all) from just after the plain key `after` (None: from the
        start)."""
        touched, self.touched = self.touched, set()
        for hash_key, range_key in touched:
            entry = self._entry(hash_key, range_key)
            exists = item_at(self.table, hash_key, range_key) is not None
            if exists and entry[0] not in self.present:
                bisect.insort(self.order, entry)
                self.present.add(entry[0])
            elif not exists and entry[0] in self.present:
                del self.order[bisect.bisect_left(self.order, (entry[0],))]
                self.present.discard(entry[0])
        start = 0 if after is None else bisect.bisect_right(self.order, (after, MAX))
        end = None if count is None else start + count
        return [item_at(self.table, h, r) for _, h, r in self.order[start:end]]


class _Max:
    """Greater than any DynamoType, so that (key, MAX) sorts after every entry of that key."""

    def __eq__(self, other):  # answered here, so that DynamoType.__eq__ never sees it
        return other is self

    __hash__ = object.__hash__

    def __lt__(self, other):
        return False

    def __gt__(self, other):
        return True


MAX = _Max()


def keep_items_by_value():
    """Mark every key a write touches, for `ItemsByValue` and `ScanOrder`: puts and deletes (batches and
    transactions go through them) and updates. A cancelled transaction puts back only items its
    writes changed, so their keys are marked already."""
    moto_put, moto_delete = Table.put_item, Table.delete_item
    moto_update = DynamoDBBackend.update_item

    def key_of(table, attrs):
        try:
            hash_key = DynamoType(attrs[table.hash_key_attr])
            range_key = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
        except (KeyError, TypeError, AttributeError):
            return None  # moto refuses such a key before it writes anything
        return hash_key, range_key

    def put_item(table, item_attrs, *args, **kwargs):
        try:
            return moto_put(table, item_attrs, *args, **kwargs)
        finally:
            key = key_of(table, item_attrs)
            if key:
                touch(table, *key)

    def delete_item(table, hash_key, range_key, *args, **kwargs):
        try:
            return moto_delete(table, hash_key, range_key, *args, **kwargs)
        finally:
            touch(table, hash_key, range_key)

    def update_item(backend, table_name, key, *args, **kwargs):
        try:
            return moto_update(backend, table_name, key, *args, **kwargs)
        finally:
            table = backend.tables.get(table_name)
            found = key_of(table, key) if table is not None and isinstance(key, dict) else None
            if found:
                touch(table, *found)

    Table.put_item, Table.delete_item = put_item, delete_item
    DynamoDBBackend.update_item = update_item


def attribute_values_as_they_are():
    """Write attribute values (and maps and lists of them) straight into the answer.

    By the time the serializer sees them, moto has turned them into their wire form
    (`{"S": "x"}`, `{"M": {...}}`), except that binary values are raw bytes for the serializer to
    base64-encode; `wire` does only that. Anything that is not in that form (a model object)
    still takes the generic path.
    """
    from botocore.model import ListShape, MapShape

    from moto.core.serialize import BaseJSONSerializer

    generic = BaseJSONSerializer._serialize

    def wire(value):
        (kind, inner), = value.items()
        if kind == "B" and isinstance(inner, bytes):
            return {"B": base64.b64encode(inner).decode()}
        if kind == "BS":
            return {"BS": [base64.b64encode(b).decode() if isinstance(b, bytes) else b for b in inner]}
        if kind == "M":
            return {"M": {k: wire(v) for k, v in inner.items()}}
        if kind == "L":
            return {"L": [wire(v) for v in inner]}
        return value

    def is_wire(value):
        return isinstance(value, dict) and len(value) == 1

    def is_attribute_value(shape):
        return shape.name == "AttributeValue"

    def serialize(self, serialized, value, shape, key):
        name = self.get_serialized_name(shape, key)
        if is_attribute_value(shape) and is_wire(value):
            serialized[name] = wire(value)
        elif (isinstance(shape, MapShape) and is_attribute_value(shape.value) and isinstance(value, dict)
              and all(is_wire(v) for v in value.values())):
            serialized[name] = {k: wire(v) for k, v in value.items()}
        elif (isinstance(shape, ListShape) and isinstance(shape.member, MapShape)
              and is_attribute_value(shape.member.value) and isinstance(value, list)
              and all(isinstance(i, dict) and all(is_wire(v) for v in i.values()) for i in value)):
            serialized[name] = [{k: wire(v) for k, v in i.items()} for i in value]
        else:
            generic(self, serialized, value, shape, key)

    BaseJSONSerializer._serialize = serialize


def plain_values_first():
    """Sizes and wire forms of strings and numbers without moto's chain of type tests."""
    import moto.dynamodb.responses as responses
    from moto.dynamodb.models import utilities

    moto_size = DynamoType.size
    moto_to_dict = utilities.dynamo_to_dict

    def size(value):
        kind, inner = value.type, value.value
        if kind == "S" and isinstance(inner, str):
            return len(inner) if inner.isascii() else len(inner.encode("utf-8"))
        if kind == "N":
            return len(str(inner))
        return moto_size(value)

    def to_dict(obj):
        if type(obj) is DynamoType and obj.type in ("S", "N", "BOOL", "NULL") and not isinstance(obj.value, (list, dict)):
            return {obj.type: obj.value}
        if type(obj) is dict:
            return {k: to_dict(v) for k, v in obj.items()}
        if type(obj) is list:
            return [to_dict(v) for v in obj]
        return moto_to_dict(obj)

    def item_size(item):
        total = 0
        for name, value in item.attrs.items():
            total += (len(name) if name.isascii() else len(name.encode("utf-8"))) + size(value)
        return total

    DynamoType.size = size
    Item.size = item_size
    # moto's own recursion (through the module's name) and its answers both take the short way.
    utilities.dynamo_to_dict = to_dict
    responses.dynamo_to_dict = to_dict


def is_plain(value):
    """A string, a number in the form DynamoDB would answer it, a boolean or a null."""
    if type(value) is not DynamoType:
        return False
    kind = value.type
    if kind == "S":
        return isinstance(value.value, str)
    if kind == "N":
        # boto3's round trip through Decimal (moto's projection) normalises "01" to "1".
        return isinstance(value.value, str) and str(DYNAMODB_CONTEXT.create_decimal(value.value)) == value.value
    return kind in ("BOOL", "NULL") and not isinstance(value.value, (list, dict))


def plain_copy(value):
    twin = DynamoType.__new__(DynamoType)
    twin.type, twin.value = value.type, value.value  # str, bool: immutable, safe to share
    return twin


def copy_and_project_plain_values():
    """Copy items, and project them onto top-level names, without a round trip through Python values.

    moto deep-copies each item of a Query page through `copy.deepcopy`'s dispatch for every value,
    and projects an item by deserializing all of it with boto3 (`to_regular_json`), looking up
    each path and serializing the result back. For an item of strings and numbers and a projection
    of top-level names, the answer is the same values under the same names.
    """
    moto_deepcopy = Item.__deepcopy__
    moto_project = Item.project

    def deepcopy_item(item, memo):
        if not all(type(v) is DynamoType and v.type in ("S", "N", "BOOL", "NULL")
                   and not isinstance(v.value, (list, dict)) for v in item.attrs.values()):
            return moto_deepcopy(item, memo)
        twin = Item.__new__(Item)
        twin.hash_key = None if item.hash_key is None else plain_copy(item.hash_key)
        twin.range_key = None if item.range_key is None else plain_copy(item.range_key)
        attrs = LimitedSizeDict.__new__(LimitedSizeDict)
        dict.__init__(attrs, ((name, plain_copy(v)) for name, v in item.attrs.items()))
        twin.attrs = attrs
        return twin

    def project(item, projection_expressions):
        names = [path[0] for path in projection_expressions if len(path) == 1]
        if len(names) != len(projection_expressions):
            return moto_project(item, projection_expressions)
        picked = [(name, item.attrs[name]) for name in dict.fromkeys(names) if name in item.attrs]
        if not all(is_plain(v) for _, v in picked):
            return moto_project(item, projection_expressions)
        attrs = LimitedSizeDict.__new__(LimitedSizeDict)
        dict.__init__(attrs, ((name, plain_copy(v)) for name, v in picked))
        twin = Item.__new__(Item)
        twin.hash_key, twin.range_key, twin.attrs = item.hash_key, item.range_key, attrs
        return twin

    Item.__deepcopy__ = deepcopy_item
    Item.project = project


def scan_from_the_start_key():
    """A Scan page starts right after its start key in a sorted list of the table's keys.

    moto sorts every item by comparing `DynamoType`s (a Python call per comparison), then walks
    the sorted table from its first item up to the page's start key. A Scan of the table itself
    (not an index, not a segment) now gets its items sorted by `cast_value`, the order moto's
    comparisons give, from just after the start key: the page's items and one more, from the
    `ScanOrder` kept as writes come (sorting the table for every page cost 35 ms a page at
    11,000 items); moto does the rest (limits, filters, projection, the last evaluated key).
    """
    moto_scan = Table.scan

    def scan(table, filters, limit, exclusive_start_key, filter_expression=None, index_name=None,
             consistent_read=False, projection_expression=None, segments=(None, None)):
        if index_name is not None or segments != (None, None):
            return moto_scan(table, filters, limit, exclusive_start_key, filter_expression, index_name,
                             consistent_read, projection_expression, segments)
        after = None
        if exclusive_start_key:
            after = DynamoType(exclusive_start_key[table.hash_key_attr]).cast_value
            if table.range_key_attr is not None:
                after = (after, DynamoType(exclusive_start_key[table.range_key_attr]).cast_value)
        # One item past the limit, so that moto sees there is more and gives LastEvaluatedKey.
        items = watcher(table, ScanOrder).page(after, None if limit is None else limit + 1)
        table.all_items = lambda: items  # shadows the method for this call only
        try:
            return moto_scan(table, filters, limit, None, filter_expression, index_name,
                             consistent_read, projection_expression, segments)
        finally:
            del table.all_items

    Table.scan = scan


def scan_in_short_pages():
    """A Scan page evaluates at most SCAN_PAGE_ITEMS items (moto applies a Limit before filters,
    as DynamoDB does), so that one Scan never holds the server for seconds."""
    scan = Table.scan

    def short(table, filters, limit, exclusive_start_key, *args, **kwargs):
        limit = SCAN_PAGE_ITEMS if limit is None else min(limit, SCAN_PAGE_ITEMS)
        return scan(table, filters, limit, exclusive_start_key, *args, **kwargs)

    Table.scan = short


def list_the_package_once():
    """moto finds the backend of every request by listing its own package directory (a `listdir`
    and an `isdir` per module, about 150, for each request: 8 % of its time in `scripts/soak`).
    The package does not change while the server runs, so it is listed once."""
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules


class IdempotentTransactions:
    """A TransactWriteItems that succeeded, replayed by its token (fix 13)."""

    WINDOW = 600.0

    def __init__(self, app):
        self.app = app
        self.done = {}  # token -> (expiry, request body, answer status, headers, body)

    def __call__(self, environ, start_response):
        if not environ.get("HTTP_X_AMZ_TARGET", "").endswith(".TransactWriteItems"):
            return self.app(environ, start_response)
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(raw)
        try:
            request = json.loads(raw or b"{}")
            token = request.pop("ClientRequestToken", None)
        except ValueError:
            token = None
        if token is None:
            return self.app(environ, start_response)
        now = time.monotonic()
        for old in [t for t, d in self.done.items() if d[0] < now]:
            del self.done[old]
        seen = self.done.get(token)
        if seen is not None:
            if seen[1] != request:
                body = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#IdempotentParameterMismatchException",
                                   "message": "The request uses the same client token as a previous, but non-identical request."}).encode()
                start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.0"), ("Content-Length", str(len(body)))])
                return [body]
            start_response(seen[2], seen[3])
            return [seen[4]]
        status = []

        def capture(s, headers, exc_info=None):
            status.append((s, list(headers)))
            return start_response(s, headers, exc_info)

        out = b"".join(self.app(environ, capture))
        if status and status[0][0].startswith("200"):
            self.done[token] = (now + self.WINDOW, request, status[0][0], status[0][1], out)
        return [out]


class Meter:
    """Per DynamoDB operation and table: calls, and items read or written (in a transaction, which
    DynamoDB bills twice, items and condition checks apart). What a request costs also depends on
    its items' sizes; the cost model sizes them from the tables themselves."""

    def __init__(self, app):
        self.app = app
        self.counts = {}

    def add(self, op, table, **fields):
        row = self.counts.setdefault(f"{op} {table}", {})
        for k, v in fields.items():
            row[k] = row.get(k, 0) + v

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/_meter":
            if environ.get("REQUEST_METHOD") == "DELETE":
                self.counts = {}
            body = json.dumps(self.counts, sort_keys=True).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        # What the cost model reads to size items is not the service's work.
        if not target.startswith("DynamoDB_") or "cost-model-probe" in environ.get("HTTP_USER_AGENT", ""):
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(raw)
        status = []

        def capture(s, headers, exc_info=None):
            status.append(s)
            return start_response(s, headers, exc_info)

        out = b"".join(self.app(environ, capture))
        try:
            # A write refused by its condition, or a cancelled transaction, is billed too.
            refused = status and status[0].startswith("400") and (b"ConditionalCheckFailed" in out or b"TransactionCanceled" in out)
            if status and (status[0].startswith("200") or refused):
                self.count(target.split(".", 1)[1], json.loads(raw or b"{}"), json.loads(out or b"{}"))
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # a meter never changes an answer
        return [out]

    def count(self, op, req, resp):
        """Reads are keyed by consistency too (`Query deck-files eventual`), since DynamoDB bills a
        strong read twice an eventual one; a Query or Scan counts the items it read before any
        filter (ScannedCount), as DynamoDB bills them."""
        strong = lambda ask: "strong" if ask.get("ConsistentRead") else "eventual"  # noqa: E731
        if op == "GetItem":
            self.add(op, f"{req['TableName']} {strong(req)}", calls=1, items=1)
        elif op in ("Query", "Scan"):
            table = req["TableName"] + (f"/{req['IndexName']}" if req.get("IndexName") else "")
            self.add(op, f"{table} {strong(req)}", calls=1, items=resp.get("ScannedCount", resp.get("Count", 0)))
        elif op == "BatchGetItem":
            for table, ask in req["RequestItems"].items():
                self.add(op, f"{table} {strong(ask)}", calls=1, items=len(ask["Keys"]))
        elif op in ("PutItem", "UpdateItem", "DeleteItem"):
            self.add(op, req["TableName"], calls=1, items=1)
        elif op == "BatchWriteItem":
            for table, items in req["RequestItems"].items():
                self.add(op, table, calls=1, items=len(items))
        elif op in ("TransactWriteItems", "TransactGetItems"):
            self.add(op, "*", calls=1)
            for item in req["TransactItems"]:
                (kind, body), = item.items()
                self.add(op, body["TableName"], **({"checks": 1} if kind == "ConditionCheck" else {"items": 1}))
        else:
            self.add(op, req.get("TableName", "-"), calls=1)


def serve_one_request_at_a_time(host, port):
    from werkzeug.serving import run_simple

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.server import MotoRequestHandler

    app = IdempotentTransactions(Meter(DomainDispatcherApplication(create_backend_app)))
    run_simple(host, port, app, threaded=False,
               request_handler=MotoRequestHandler)


def refuse_other_versions():
    """The patches below reach into moto's internals as one version has them: on any other they
    may silently change what moto answers. The pin lives in requirements-moto.txt."""
    from importlib.metadata import version

    pin_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "requirements-moto.txt")
    with open(pin_file, encoding="utf-8") as f:
        pins = [line.split("==", 1)[1].strip() for line in f if line.startswith("moto[server]==")]
    installed = version("moto")
    if pins and installed != pins[0]:
        sys.exit(
            f"moto {installed} is installed, but scripts/moto_server.py's patches were verified on moto "
            f"{pins[0]}. Install the pinned version (scripts/bootstrap), or, to move to {installed}, set "
            f"its pin in scripts/requirements-moto.txt and re-verify the patches: "
            f"$TOOLS_VENV/bin/python -m pytest tests/emulator, then make test."
        )


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    refuse_other_versions()
    stop_tracking_instances()
    roll_back_with_an_undo_log()
    expire_iterators_and_trim_streams()
    query_one_partition()
    keep_items_by_value()
    attribute_values_as_they_are()
    plain_values_first()
    copy_and_project_plain_values()
    scan_from_the_start_key()
    scan_in_short_pages()
    list_the_package_once()
    serve_one_request_at_a_time(host, port)


if __name__ == "__main__":
    main()
