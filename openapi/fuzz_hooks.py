"""Schemathesis hooks for fuzz-api.sh (loaded through SCHEMATHESIS_HOOKS=fuzz_hooks).

Random deck ids almost never name a deck that holds anything, or one the token maintains, so
half of the generated cases get the deck that fuzz-api.sh seeded with a real, processed file and
that the token maintains (FUZZ_DECK): the success paths (signed URLs, thumbnails, listings) get
their responses checked against the schema too, not only the refusals.
"""

import os
import re

import schemathesis
from hypothesis import strategies as st

DECK = os.environ.get("FUZZ_DECK", "fz-maint")
VALID_DECK = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _swappable(value):
    # Only a deck that is already valid is swapped for another valid one, so a negative case
    # (a deck of the wrong type or shape) stays negative.
    return isinstance(value, dict) and isinstance(value.get("deck"), str) and VALID_DECK.fullmatch(value["deck"])


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    if _swappable(path_parameters):
        return st.sampled_from([path_parameters, {**path_parameters, "deck": DECK}])
    return st.just(path_parameters)


@schemathesis.hook
def flatmap_body(context, body):
    if _swappable(body):
        return st.sampled_from([body, {**body, "deck": DECK}])
    return st.just(body)
