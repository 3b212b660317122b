//! Group commit: concurrent writes of one kind folded into one statement (and one commit), the
//! way a database folds concurrent commits into one log flush.
//!
//! An actor keeps a [`GroupCommit`] in its state. Each request is [`GroupCommit::push`]ed and
//! answered through the receiver it gets back; the actor then drains
//! [`GroupCommit::next_batch`] and writes each batch in a future of its own. At most
//! `max_in_flight` batches are written at once: while they are, new requests queue, so the next
//! batch carries all of them. A lone request is written at once (a batch of one, no waiting);
//! under load batches grow by themselves, up to `max_batch`.
//!
//! Nothing here knows what is written: items and answers are the caller's types. Each group
//! commit is named; its batches' sizes and write times go to `group_commit_batch_size{name}`
//! and `group_commit_write_seconds{name}`.

use std::collections::VecDeque;
use std::time::Instant;

use prometheus::Histogram;
use tokio::sync::oneshot;

use crate::metrics::{GROUP_COMMIT_BATCH_SIZE, GROUP_COMMIT_WRITE};

/// How many batches may be written at once, and how large one may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Batches written at once (at least 1).
    pub max_in_flight: usize,
    /// Items in one batch (at least 1).
    pub max_batch: usize,
}

/// The queue and the count of batches being written. Not shared: it lives in one actor.
#[derive(Debug)]
pub struct GroupCommit<I, O> {
    queue: VecDeque<(I, oneshot::Sender<O>)>,
    in_flight: usize,
    limits: Limits,
    /// This group commit's series of `group_commit_batch_size`.
    sizes: Histogram,
    /// This group commit's series of `group_commit_write_seconds`.
    writes: Histogram,
}

/// Items taken off the queue together, with the answer slot of each.
#[derive(Debug)]
pub struct Batch<I, O> {
    items: Vec<I>,
    answers: Vec<oneshot::Sender<O>>,
    /// When the batch was taken off the queue.
    taken: Instant,
    /// Where its write time goes once answered.
    writes: Histogram,
}

impl<I, O> GroupCommit<I, O> {
    /// An empty group commit within `limits` (a limit of 0 counts as 1), whose metrics carry
    /// `name`.
    pub fn new(name: &str, limits: Limits) -> Self {
        Self {
            queue: VecDeque::new(),
            in_flight: 0,
            limits: Limits {
                max_in_flight: limits.max_in_flight.max(1),
                max_batch: limits.max_batch.max(1),
            },
            sizes: GROUP_COMMIT_BATCH_SIZE.with_label_values(&[name]),
            writes: GROUP_COMMIT_WRITE.with_label_values(&[name]),
        }
    }

    /// Forgets the queue (its callers get an error) and the batches in flight: for an actor
    /// restarting, whose writing futures were cancelled with its old context.
    pub fn reset(&mut self) {
        self.queue.clear();
        self.in_flight = 0;
    }

    /// Queues `item`; its answer arrives on the receiver. The receiver errs if the batch is
    /// dropped unanswered (the actor stopped).
    pub fn push(&mut self, item: I) -> oneshot::Receiver<O> {
        let (tx, rx) = oneshot::channel();
        self.queue.push_back((item, tx));
        rx
    }

    /// The next batch to write, if a writer slot is free and anything waits; it counts as in
    /// flight until [`GroupCommit::finished`].
    pub fn next_batch(&mut self) -> Option<Batch<I, O>> {
        if self.in_flight >= self.limits.max_in_flight || self.queue.is_empty() {
            return None;
        }
        let n = self.queue.len().min(self.limits.max_batch);
        let (items, answers) = self.queue.drain(..n).unzip();
        self.in_flight += 1;
        self.sizes.observe(n as f64);
        Some(Batch {
            items,
            answers,
            taken: Instant::now(),
            writes: self.writes.clone(),
        })
    }

    /// A batch from [`GroupCommit::next_batch`] is written (answered or dropped).
    pub fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Requests waiting for a batch.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Batches being written.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl<I, O> Batch<I, O> {
    /// The items, in the order they were pushed.
    pub fn items(&self) -> &[I] {
        &self.items
    }

    /// Answers every item: `outcomes` in the order of [`Batch::items`], and records the
    /// batch's write time. A caller that stopped waiting is skipped.
    ///
    /// # Panics
    /// If there is not exactly one outcome per item (a bug in the writer).
    pub fn answer(self, outcomes: Vec<O>) {
        assert_eq!(
            outcomes.len(),
            self.answers.len(),
            "one outcome per batched item"
        );
        self.writes.observe(self.taken.elapsed().as_secs_f64());
        for (answer, outcome) in self.answers.into_iter().zip(outcomes) {
            let _ = answer.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// A lone item makes a batch at once; while the writer slots are taken items queue, and the
    /// next batch takes them together, bounded by the batch size.
    fn batches_grow_while_writers_are_busy() {
        let mut group: GroupCommit<u32, u32> = GroupCommit::new(
            "test",
            Limits {
                max_in_flight: 1,
                max_batch: 3,
            },
        );
        let first = group.push(1);
        let batch = group.next_batch().expect("a free slot and an item");
        assert_eq!(batch.items(), &[1]);
        let waiting: Vec<_> = (2..=6).map(|i| group.push(i)).collect();
        assert!(group.next_batch().is_none(), "the only slot is busy");
        assert_eq!((group.queued(), group.in_flight()), (5, 1));
        batch.answer(vec![10]);
        group.finished();
        let next = group.next_batch().expect("slot free again");
        assert_eq!(next.items(), &[2, 3, 4]);
        next.answer(vec![20, 30, 40]);
        group.finished();
        let last = group.next_batch().expect("the rest");
        assert_eq!(last.items(), &[5, 6]);
        drop(last);
        group.finished();
        let mut answers = vec![first];
        answers.extend(waiting);
        let got: Vec<Option<u32>> = answers
            .into_iter()
            .map(|mut rx| rx.try_recv().ok())
            .collect();
        assert_eq!(
            got,
            vec![Some(10), Some(20), Some(30), Some(40), None, None],
            "a dropped batch leaves its callers with an error, not a hang"
        );
    }
}
