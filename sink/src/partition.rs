//! What the poll loop knows about one assigned partition, as a type whose states cannot
//! contradict each other: a partition is either waiting to learn where it starts (paused,
//! everything it yields dropped) or being read from a known position.

/// One assigned partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionState {
    /// Assigned, re-assigned or fenced, and paused until [`crate::resume`] has found where it
    /// starts; whatever it yields before the seek is dropped.
    Resuming {
        /// The reading this state belongs to (see [`Reading::epoch`]).
        epoch: u64,
    },
    /// Seeked to its start and being read.
    Reading(Reading),
}

/// A partition being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// Incremented on every (re)assignment and re-seek, so late results about an older
    /// reading of the partition are recognised and ignored.
    pub epoch: u64,
    /// The offset the table is expected to have recorded once every sealed job has
    /// committed (`None`: nothing recorded yet).
    pub expected_recorded: Option<i64>,
    pub position: Position,
}

/// Where reading stands since the seek.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Nothing read since the seek; the first record should be at this offset (`None`: the
    /// log's beginning, wherever that is).
    Start(Option<i64>),
    /// The next offset to accept; anything below was fetched before a re-seek.
    Next(i64),
}

/// What to do with a record the broker delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Read before the partition's seek (or while it waits for one): it is read again from
    /// the partition's start, so this copy is dropped.
    Skip,
    /// Handle it.
    Take,
    /// Handle it; it is the first record since the seek and lies past the start offset
    /// given here (aborted transactions or control records that `read_committed` skips).
    TakePastStart(i64),
}

impl PartitionState {
    /// Waiting for its start, as reading `epoch`.
    pub fn resuming(epoch: u64) -> Self {
        PartitionState::Resuming { epoch }
    }

    pub fn epoch(&self) -> u64 {
        match self {
            PartitionState::Resuming { epoch } => *epoch,
            PartitionState::Reading(r) => r.epoch,
        }
    }

    pub fn is_resuming(&self) -> bool {
        matches!(self, PartitionState::Resuming { .. })
    }

    /// Decides on the record at `offset` and, if it is taken, moves past it.
    pub fn accept(&mut self, offset: i64) -> Accept {
        let PartitionState::Reading(r) = self else {
            return Accept::Skip;
        };
        let verdict = match r.position {
            Position::Next(next) if offset < next => return Accept::Skip,
            Position::Start(Some(start)) if offset < start => return Accept::Skip,
            Position::Start(Some(start)) if offset > start => Accept::TakePastStart(start),
            _ => Accept::Take,
        };
        r.position = Position::Next(offset + 1);
        verdict
    }

    /// The next offset this reading has handled up to, if it has read anything.
    pub fn next_offset(&self) -> Option<i64> {
        match self {
            PartitionState::Reading(Reading {
                position: Position::Next(n),
                ..
            }) => Some(*n),
            PartitionState::Reading(Reading {
                position: Position::Start(s),
                ..
            }) => *s,
            PartitionState::Resuming { .. } => None,
        }
    }

    /// What a job sealed now records for this partition: the offset the table should hold
    /// before it and the epoch it was read under. Then expects the table to hold `end`.
    /// `None` for a partition not being read (its rows were dropped when it stopped being).
    pub fn seal(&mut self, end: i64) -> Option<(Option<i64>, u64)> {
        let PartitionState::Reading(r) = self else {
            return None;
        };
        let before = r.expected_recorded.replace(end);
        Some((before, r.epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(position: Position) -> PartitionState {
        PartitionState::Reading(Reading {
            epoch: 3,
            expected_recorded: Some(10),
            position,
        })
    }

    #[test]
    fn a_resuming_partition_takes_nothing() {
        let mut s = PartitionState::resuming(1);
        assert_eq!(s.accept(0), Accept::Skip);
        assert_eq!(s.seal(5), None);
        assert!(s.is_resuming());
    }

    #[test]
    fn records_fetched_before_the_seek_are_skipped_and_a_later_first_record_is_reported() {
        let mut s = reading(Position::Start(Some(10)));
        assert_eq!(s.accept(7), Accept::Skip, "fetched before the seek");
        assert_eq!(s.accept(12), Accept::TakePastStart(10));
        assert_eq!(s.accept(11), Accept::Skip, "behind the position now");
        assert_eq!(s.accept(13), Accept::Take);
        assert_eq!(s.next_offset(), Some(14));

        let mut s = reading(Position::Start(Some(10)));
        assert_eq!(s.accept(10), Accept::Take, "exactly at the start");
        let mut s = reading(Position::Start(None));
        assert_eq!(s.accept(42), Accept::Take, "from the beginning: anything");
    }

    #[test]
    fn sealing_hands_over_the_expectation_and_moves_it_to_the_end() {
        let mut s = reading(Position::Next(20));
        assert_eq!(s.seal(20), Some((Some(10), 3)));
        assert_eq!(s.seal(25), Some((Some(20), 3)));
    }
}
