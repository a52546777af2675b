// my_handler.js: a pimgate plugin that prints one line per event it receives.
//
// It takes both Akeneo producers. A legacy Events API event (and a reconciliation event) carries
// the whole product or product model as its data. An Event Platform event carries ids only,
// plus the whole resource as data.resource when its manifest entry has `hydrate: true`.
const { run, ok } = require('@pimgate/sdk');

// The product or product model as the REST API shows it, or null when the event carries its ids
// only.
function resourceOf(event) {
  if (event.origin === 'ORIGIN_EVENT_PLATFORM') {
    return event.data.resource ?? null; // with hydrate: true (null when the PIM no longer has it)
  }
  return event.data; // legacy Events API, reconciliation: the resource itself
}

run(
  async (event, attempt) => {
    // event.sequence is a decimal string; timestamps are RFC 3339 strings; event.data is JSON.
    let detail;
    if (event.type.endsWith('.deleted')) {
      detail = 'deleted';
    } else {
      const resource = resourceOf(event);
      detail = resource
        ? `family ${resource.family || '-'}, updated ${resource.updated}`
        : 'ids only (an Event Platform event; hydrate: true adds the product)';
    }
    // stdout goes to pimgate's log, as "[plugin NAME] <line>".
    console.log(`${event.type} ${event.resource_id} attempt ${attempt}: ${detail}`);
    return ok(); // returning undefined is OK too; a thrown error or rejected promise means RETRY
  },
  { concurrency: 8 },
);
