//! Log sequence numbers.

use std::fmt;

/// A log sequence number: the position of a record in the log.
///
/// LSNs are dense: the first record ever appended is `Lsn(1)` and each append takes the next
/// one. `Lsn(0)` is "no record" (the LSN durable before anything was appended).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// "No record": what is durable in an empty log.
    pub const ZERO: Lsn = Lsn(0);
    /// The LSN of the first record of a new log.
    pub const FIRST: Lsn = Lsn(1);

    /// The LSN after this one.
    #[must_use]
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }

    /// The LSN before this one; `Lsn::ZERO` stays `Lsn::ZERO`.
    #[must_use]
    pub fn prev(self) -> Lsn {
        Lsn(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
