"""Schemathesis hooks for test_fuzz_api.py, loaded by the `st` process (SCHEMATHESIS_HOOKS):
real continuation tokens for the document's token format, which no generic generator can
make; short waits where a start request says how long to wait for the instance; and the one
500 the API answers on purpose (a Failed instance asked with
returnInternalServerErrorOnFailure=true) not counted as a server error."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import schemathesis
from hypothesis import strategies as st

from dfhost.store.query import encode_continuation
from dfhost.web.openapi import CONTINUATION_FORMAT

MAX_WAIT = 0.05
"""Seconds a generated start request may wait for its instance (an orchestrator waiting for
an event would hold every request for its whole `timeout`)."""

schemathesis.openapi.format(
    CONTINUATION_FORMAT,
    st.builds(
        encode_continuation,
        st.datetimes(timezones=st.just(UTC)),
        st.text(max_size=20),
    ),
)


@schemathesis.hook
def map_query(context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    timeout = (query or {}).get("timeout")
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > MAX_WAIT:
        assert query is not None
        query["timeout"] = MAX_WAIT
    return query


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    asked = str((case.query or {}).get("returnInternalServerErrorOnFailure", "")).lower()
    if response.status_code == 500 and asked == "true":
        try:
            failed = response.json().get("runtimeStatus") == "Failed"
        except ValueError:
            failed = False
        return not failed
    return True
