//! The page semantics of `read_all`, written once: where a read starts, how skip,
//! limit and filters apply, and which cursor continues it.

use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::model::{Direction, Position, RecordedEvent};
use crate::query::{EventFilter, ReadAll, ReadAllPage, ReadFrom};

/// Collects one page of a store-wide read while a backend feeds it events in the
/// read's direction, starting just past [`PageCollector::start`].
///
/// ```
/// use annals_core::{scan::PageCollector, ReadAll};
/// let c = PageCollector::new(&ReadAll::forward().after(5), 9).unwrap();
/// assert_eq!(c.start(), 5);
/// assert!(PageCollector::new(&ReadAll::forward().cursor(annals_core::Cursor::forward_after(10)), 9).is_err());
/// ```
#[derive(Debug)]
pub struct PageCollector {
    direction: Direction,
    filter: EventFilter,
    start: Position,
    head: Position,
    skip: u64,
    limit: u64,
    events: Vec<RecordedEvent>,
    last_scanned: Position,
    full: bool,
}

impl PageCollector {
    /// Starts a page of `read` against a store whose newest position is `head`.
    /// Refuses cursors that this store cannot have issued.
    pub fn new(read: &ReadAll, head: Position) -> Result<Self> {
        let start = match (read.direction, read.from) {
            (Direction::Forward, ReadFrom::Start) => 0,
            (Direction::Forward, ReadFrom::Position(p)) => p,
            (Direction::Backward, ReadFrom::Start) => head + 1,
            (Direction::Backward, ReadFrom::Position(p)) => p.min(head + 1),
            (direction, ReadFrom::Cursor(c)) => {
                if c.direction() != direction {
                    return Err(Error::invalid(
                        "cursor",
                        "continues a read in the other direction",
                    ));
                }
                let limit = match direction {
                    Direction::Forward => head,
                    Direction::Backward => head + 1,
                };
                if c.position() > limit {
                    return Err(Error::invalid(
                        "cursor",
                        format!(
                            "{c} points past the head of the store (position {head}); it was never issued by this store"
                        ),
                    ));
                }
                c.position()
            }
        };
        Ok(PageCollector {
            direction: read.direction,
            filter: read.filter.clone(),
            start,
            head,
            skip: read.skip,
            limit: read.limit.unwrap_or(u64::MAX),
            events: Vec::new(),
            last_scanned: start,
            full: read.limit == Some(0),
        })
    }

    /// The exclusive bound the backend scans from.
    pub fn start(&self) -> Position {
        self.start
    }

    /// The filter of the read (backends may use it to choose an index).
    pub fn filter(&self) -> &EventFilter {
        &self.filter
    }

    /// The read's direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Whether the page still takes events.
    pub fn wants_more(&self) -> bool {
        !self.full
    }

    /// How many more matching events the page can take (skip included).
    pub fn remaining(&self) -> u64 {
        if self.full {
            0
        } else {
            self.limit
                .saturating_sub(self.events.len() as u64)
                .saturating_add(self.skip)
        }
    }

    /// Notes that the scan passed `position` without an event to offer (an index told
    /// the backend nothing there matches).
    pub fn passed(&mut self, position: Position) {
        if !self.full {
            self.last_scanned = position;
        }
    }

    /// Offers the next event in scan order; returns whether to keep scanning.
    pub fn offer(&mut self, event: RecordedEvent) -> bool {
        if self.full {
            return false;
        }
        self.last_scanned = event.position;
        if self.filter.matches(&event) {
            if self.skip > 0 {
                self.skip -= 1;
            } else {
                self.events.push(event);
                if self.events.len() as u64 >= self.limit {
                    self.full = true;
                }
            }
        }
        !self.full
    }

    /// The page. `exhausted` = the backend scanned to the end of the store.
    pub fn finish(self, exhausted: bool) -> ReadAllPage {
        let (next_cursor, end) = match self.direction {
            Direction::Forward => {
                let last = if self.full {
                    self.last_scanned
                } else if exhausted {
                    self.head.max(self.start)
                } else {
                    self.last_scanned
                };
                (Cursor::forward_after(last), last >= self.head)
            }
            Direction::Backward => {
                let last = if self.full || !exhausted {
                    self.last_scanned
                } else {
                    1.min(self.start)
                };
                (Cursor::backward_before(last), last <= 1)
            }
        };
        ReadAllPage {
            events: self.events,
            next_cursor,
            head_position: self.head,
            end,
        }
    }
}
