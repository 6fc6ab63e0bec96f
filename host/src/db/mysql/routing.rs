//! Where a read goes: the database rules of DESIGN.md as one pure function.
//!
//! Writes (`execute`) and transactions always go to the primary and never ask: it is
//! the only node that takes them, and a transaction's statements all run on the
//! connection it took at `begin`. Reads spread over the replicas in rotation, round
//! robin, except after the request wrote (it must read its writes: only the
//! primary has them for sure). The primary's own health does not steer anything: it is
//! the only node with every write, and a check's verdict is up to an interval old, so
//! it is always worth trying when the plan says so.

/// A node of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Primary,
    /// The replica at this index of the configuration's `replicas`.
    Replica(usize),
}

/// The nodes to try for one read, in order. The second is tried only when the first
/// could not be reached (a connection failure), never after the database answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub first: Target,
    pub then: Option<Target>,
}

/// The plan for a read of a request that has written (`wrote`) or not, with
/// `replicas_up[i]` telling whether replica `i` is in rotation; `cursor` is the
/// round-robin position, a counter the caller moves on every read.
pub fn route(wrote: bool, replicas_up: &[bool], cursor: usize) -> Plan {
    let n = replicas_up.len();
    if wrote || n == 0 {
        return Plan {
            first: Target::Primary,
            then: None,
        };
    }
    let start = cursor % n;
    let mut in_rotation = (0..n).map(|i| (start + i) % n).filter(|&i| replicas_up[i]);
    match in_rotation.next() {
        Some(first) => Plan {
            first: Target::Replica(first),
            then: Some(in_rotation.next().map_or(Target::Primary, Target::Replica)),
        },
        // No replica in rotation: the primary, and should it be unreachable too (the
        // replicas may have just lost their connection to it), a replica's data beats
        // no answer.
        None => Plan {
            first: Target::Primary,
            then: Some(Target::Replica(start)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::Target::{Primary, Replica};
    use super::*;

    /// (what the case is, wrote, replicas in rotation, cursor, first, then)
    type Case = (
        &'static str,
        bool,
        &'static [bool],
        usize,
        Target,
        Option<Target>,
    );

    #[test]
    fn reads_follow_the_database_rules() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("no replicas: the primary alone", false, &[], 0, Primary, None),
            ("after a write: the primary alone", true, &[true, true], 0, Primary, None),
            ("after a write, no replicas", true, &[], 3, Primary, None),
            ("round robin starts at the cursor", false, &[true, true], 0, Replica(0), Some(Replica(1))),
            ("and moves with it", false, &[true, true], 1, Replica(1), Some(Replica(0))),
            ("the cursor wraps", false, &[true, true], 5, Replica(1), Some(Replica(0))),
            ("a replica out of rotation is skipped", false, &[false, true], 0, Replica(1), Some(Primary)),
            ("one replica: the primary is the fallback", false, &[true], 7, Replica(0), Some(Primary)),
            ("three replicas, one out", false, &[true, false, true], 1, Replica(2), Some(Replica(0))),
            ("none in rotation: the primary, then any replica", false, &[false, false], 1, Primary, Some(Replica(1))),
            ("a huge cursor does not overflow", false, &[true, true, true], usize::MAX, Replica(0), Some(Replica(1))),
        ];
        for &(case, wrote, up, cursor, first, then) in cases {
            assert_eq!(route(wrote, up, cursor), Plan { first, then }, "{case}");
        }
    }
}
