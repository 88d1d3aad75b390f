//! The oldest strategy: each instance has a dynamic batcher, and each of its slots feeds it one
//! request at a time, the next once the previous has run. Batches so mix sequences (at most one
//! request of each), the oldest requests first, as any dynamic batch forms.

use std::sync::Arc;

use super::{Inner, Shared, SlotId, Strategy};

/// Sends the slot's next request to its instance's batcher, unless one is already there.
pub(super) fn issue(s: &Arc<Shared>, inner: &mut Inner, at: SlotId) {
    let Strategy::Oldest(batchers) = &s.strategy else { return };
    loop {
        let slot = &mut inner.slots[at.0][at.1];
        if slot.in_flight {
            return;
        }
        let Some(mut job) = slot.queue.pop_front() else {
            if std::mem::take(&mut slot.idle_ended) {
                s.release(inner, at);
                continue;
            }
            return;
        };
        s.prepare(slot, &mut job, at);
        slot.in_flight = true;
        let end = job.request.sequence_end;
        // Counted as pending again by the batcher.
        s.stats.pending(-1);
        // The batcher's queue has no size limit: it takes every job.
        let _ = batchers[at.0].enqueue(job);
        if end {
            s.release(inner, at);
        }
        return;
    }
}
