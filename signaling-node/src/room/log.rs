//! A room's event log: gapless sequence numbers starting at 1 and a bounded ring of the most
//! recent events for resume replay, with undo so a failed commit can be rolled back exactly.

use std::collections::VecDeque;

use switchboard_protocol::Event;

/// Where a resume can pick up from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay<'a> {
    /// Every event after the client's `last_seq` is still retained: these, oldest first.
    Complete(Vec<&'a Event>),
    /// Some events after `last_seq` were already evicted; these are the retained ones after it.
    Gap(Vec<&'a Event>),
}

/// The ring of recent events plus the last assigned sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    ring: VecDeque<Event>,
    last_seq: u64,
    capacity: usize,
    /// Events evicted since the last [`EventLog::mark`], newest last (for rollback).
    evicted: Vec<Event>,
    mark: u64,
}

impl EventLog {
    /// An empty log keeping at most `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: VecDeque::new(),
            last_seq: 0,
            capacity: capacity.max(1),
            evicted: Vec::new(),
            mark: 0,
        }
    }

    /// A log restored from a snapshot: `events` oldest first, ending at `last_seq`.
    pub fn restore(capacity: usize, last_seq: u64, mut events: Vec<Event>) -> Self {
        events.retain(|e| e.seq <= last_seq);
        events.sort_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        let mut log = Self::new(capacity);
        log.last_seq = last_seq;
        log.mark = last_seq;
        let skip = events.len().saturating_sub(log.capacity);
        log.ring.extend(events.into_iter().skip(skip));
        log
    }

    /// Sequence number of the latest event (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The retained events, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &Event> {
        self.ring.iter()
    }

    /// Changes the capacity (hot reload); applies at the next append.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// Appends `event` with the next sequence number (its `seq` is overwritten) and returns
    /// a copy as stored.
    pub fn append(&mut self, mut event: Event) -> Event {
        self.last_seq += 1;
        event.seq = self.last_seq;
        while self.ring.len() >= self.capacity {
            if let Some(old) = self.ring.pop_front() {
                self.evicted.push(old);
            }
        }
        if self.ring.len() == self.ring.capacity() {
            // Grow from two slots, doubling, never past the retention limit: most rooms
            // are small and idle, and a VecDeque's first allocation would be four events.
            let len = self.ring.len();
            self.ring.reserve_exact(len.max(2).min(self.capacity - len));
        }
        self.ring.push_back(event.clone());
        event
    }

    /// Events the ring can hold without growing (for the memory regression tests).
    pub fn ring_capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Starts a unit of work that [`EventLog::rollback`] can undo.
    pub fn mark(&mut self) {
        self.evicted.clear();
        self.mark = self.last_seq;
    }

    /// Undoes every append since the last [`EventLog::mark`].
    pub fn rollback(&mut self) {
        while self.ring.back().is_some_and(|e| e.seq > self.mark) {
            self.ring.pop_back();
        }
        while let Some(old) = self.evicted.pop() {
            self.ring.push_front(old);
        }
        self.last_seq = self.mark;
    }

    /// Events after `last_seq`, for a client resuming from it.
    pub fn since(&self, last_seq: u64) -> Replay<'_> {
        let events: Vec<&Event> = self.ring.iter().filter(|e| e.seq > last_seq).collect();
        let first_needed = last_seq.saturating_add(1);
        let complete =
            last_seq >= self.last_seq || self.ring.front().is_some_and(|e| e.seq <= first_needed);
        if complete {
            Replay::Complete(events)
        } else {
            Replay::Gap(events)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(user: &str) -> Event {
        Event {
            room: "r".into(),
            user: user.into(),
            ..Default::default()
        }
    }

    #[test]
    fn sequence_is_gapless_from_one_and_ring_is_bounded() {
        let mut log = EventLog::new(3);
        for i in 0..5 {
            assert_eq!(log.append(ev(&i.to_string())).seq, i + 1);
        }
        assert_eq!(log.last_seq(), 5);
        let seqs: Vec<u64> = log.recent().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert!(matches!(log.since(2), Replay::Complete(v) if v.len() == 3));
        assert!(matches!(log.since(1), Replay::Gap(v) if v.len() == 3));
        assert!(matches!(log.since(5), Replay::Complete(v) if v.is_empty()));
        assert!(matches!(log.since(9), Replay::Complete(v) if v.is_empty()));
    }

    #[test]
    fn ring_grows_from_two_and_stops_at_the_limit() {
        let mut log = EventLog::new(5);
        log.append(ev("a"));
        log.append(ev("b"));
        assert_eq!(log.ring_capacity(), 2);
        for _ in 0..10 {
            log.append(ev("c"));
        }
        assert_eq!(log.recent().count(), 5);
        assert!(log.ring_capacity() <= 8);
    }

    #[test]
    fn rollback_restores_evicted_events() {
        let mut log = EventLog::new(2);
        log.append(ev("a"));
        log.append(ev("b"));
        let before = log.clone();
        log.mark();
        log.append(ev("c"));
        log.append(ev("d"));
        log.rollback();
        assert_eq!(
            log.recent().collect::<Vec<_>>(),
            before.recent().collect::<Vec<_>>()
        );
        assert_eq!(log.last_seq(), 2);
        assert_eq!(log.append(ev("e")).seq, 3);
    }

    #[test]
    fn restore_keeps_the_newest() {
        let events: Vec<Event> = (1..=5)
            .map(|seq| Event {
                seq,
                ..Default::default()
            })
            .collect();
        let log = EventLog::restore(2, 5, events);
        assert_eq!(log.recent().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
        assert_eq!(log.last_seq(), 5);
    }

    proptest! {
        #[test]
        fn replay_is_exactly_the_missing_suffix(cap in 1usize..20, n in 0u64..60, from in 0u64..70) {
            let mut log = EventLog::new(cap);
            for _ in 0..n { log.append(ev("x")); }
            match log.since(from) {
                Replay::Complete(v) => {
                    let expected: Vec<u64> = (from + 1..=n).collect();
                    prop_assert_eq!(v.iter().map(|e| e.seq).collect::<Vec<_>>(), expected);
                }
                Replay::Gap(v) => {
                    prop_assert!(from + 1 < n + 1 - (v.len() as u64));
                    prop_assert!(v.iter().all(|e| e.seq > from));
                }
            }
        }
    }
}
