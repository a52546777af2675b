#!/usr/bin/python3
# my_handler.py: a pimgate plugin that prints one line per event it receives.
#
# It takes both Akeneo producers. A legacy Events API event (and a reconciliation event) carries
# the whole product or product model as its data. An Event Platform event carries ids only,
# plus the whole resource as data["resource"] when its manifest entry has `hydrate: true`.
import sys

import pimgate_sdk


def resource_of(event):
    """The product or product model as the REST API shows it, or None when the event carries
    its ids only."""
    data = pimgate_sdk.data(event)  # event.data as a plain dict
    if pimgate_sdk.Origin.Name(event.origin) == "ORIGIN_EVENT_PLATFORM":
        return data.get("resource")  # with hydrate: true (None when the PIM no longer has it)
    return data  # legacy Events API, reconciliation: the resource itself


def handle(event, attempt):
    if event.type.endswith(".deleted"):
        detail = "deleted"
    else:
        resource = resource_of(event)
        if resource is None:
            detail = "ids only (an Event Platform event; hydrate: true adds the product)"
        else:
            detail = f"family {resource.get('family') or '-'}, updated {resource.get('updated')}"
    # stdout goes to pimgate's log, as "[plugin NAME] <line>".
    print(f"{event.type} {event.resource_id} attempt {attempt}: {detail}", flush=True)
    return pimgate_sdk.ok()  # returning None is OK too; raising an exception means RETRY


if __name__ == "__main__":
    sys.exit(pimgate_sdk.run(handle, concurrency=8))
