"""What a handler answers for one delivery, and how that becomes a pimgate.v1.Ack."""

import dataclasses

from pimgate.v1 import plugin_pb2

# Longest `detail` sent back to pimgate, which keeps it with dead letters; longer texts are cut.
MAX_DETAIL_CHARS = 4096


@dataclasses.dataclass(frozen=True)
class Result:
    """A handler's decision: `outcome` is a pimgate.v1.Outcome value, `detail` free text."""

    outcome: int
    detail: str = ""


def ok() -> Result:
    """Handled: pimgate moves on and never sends this event to this plugin again."""
    return Result(plugin_pb2.OUTCOME_OK)


def retry(detail: str = "") -> Result:
    """Temporary failure: pimgate redelivers later with `attempt` + 1, then dead-letters."""
    return Result(plugin_pb2.OUTCOME_RETRY, str(detail))


def reject(detail: str = "") -> Result:
    """Permanent failure: pimgate dead-letters the event at once."""
    return Result(plugin_pb2.OUTCOME_REJECT, str(detail))


def clip(detail: str) -> str:
    if len(detail) <= MAX_DETAIL_CHARS:
        return detail
    return detail[: MAX_DETAIL_CHARS - 3] + "..."


def to_ack(sequence: int, value) -> plugin_pb2.Ack:
    """The Ack for a handler's return value: None means OK; anything but a Result is a RETRY,
    because an answer the SDK does not understand must never lose an event."""
    if value is None:
        return plugin_pb2.Ack(sequence=sequence, outcome=plugin_pb2.OUTCOME_OK)
    if isinstance(value, Result):
        return plugin_pb2.Ack(sequence=sequence, outcome=value.outcome, detail=clip(value.detail))
    return plugin_pb2.Ack(
        sequence=sequence,
        outcome=plugin_pb2.OUTCOME_RETRY,
        detail=clip(f"handler returned {type(value).__name__}, expected None or a Result "
                    "from pimgate_sdk.ok()/retry()/reject()"),
    )
