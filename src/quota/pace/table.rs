//! A schedule's table: the next slot, the runs taking turns on it, and its bytes in the
//! account's shared file.

use std::time::Duration;

use super::{FAR, FORGOTTEN, GRACE, MAX_RUNS, STALE};

/// One run's record in a schedule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Run {
    /// 0 for a free record.
    pub(super) id: u64,
    /// When the run last asked for a slot, or said it wants none.
    pub(super) heartbeat: Duration,
    pub(super) waiting: bool,
    /// The slot number it took last.
    pub(super) last_taken: u64,
    /// The period it wants.
    pub(super) period: Duration,
    /// Whether that period is learned, not a start-up ramp's: only a learned one holds the
    /// other runs back.
    pub(super) settled: bool,
}

/// A schedule's state: the next slot and the runs taking turns on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Table {
    /// The machine's boot: monotonic times of another boot mean nothing.
    pub(super) boot: [u8; 16],
    /// When the last decision was made.
    pub(super) touched: Duration,
    /// The earliest time of the next slot (zero: none yet).
    pub(super) tat: Duration,
    /// The time of the last slot taken.
    pub(super) last_slot: Duration,
    /// Slots taken so far.
    pub(super) taken: u64,
    /// When the account's last counted request left, or is due to (zero: none yet). Slots are
    /// a period apart; a departure after its slot (a busy process polled it late) would leave
    /// the next one, another job's as well, closer than that to it.
    pub(super) departed: Duration,
    pub(super) runs: [Run; MAX_RUNS],
}

const MAGIC: &[u8; 8] = b"bvpace03";
const HEADER: usize = 8 + 16 + 5 * 8;
const RUN_BYTES: usize = 6 * 8;
pub(super) const TABLE_BYTES: usize = HEADER + MAX_RUNS * RUN_BYTES;

pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Table {
    pub(super) fn new(boot: [u8; 16]) -> Table {
        Table {
            boot,
            touched: Duration::ZERO,
            tat: Duration::ZERO,
            last_slot: Duration::ZERO,
            taken: 0,
            departed: Duration::ZERO,
            runs: [Run::default(); MAX_RUNS],
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TABLE_BYTES);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.boot);
        for d in [self.touched, self.tat, self.last_slot] {
            out.extend_from_slice(&nanos(d).to_le_bytes());
        }
        out.extend_from_slice(&self.taken.to_le_bytes());
        out.extend_from_slice(&nanos(self.departed).to_le_bytes());
        for r in &self.runs {
            for v in [
                r.id,
                nanos(r.heartbeat),
                u64::from(r.waiting),
                r.last_taken,
                nanos(r.period),
                u64::from(r.settled),
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// The table in `bytes`, if they hold one (an empty or foreign file holds none).
    pub(super) fn decode(bytes: &[u8]) -> Option<Table> {
        if bytes.len() < TABLE_BYTES || &bytes[..8] != MAGIC {
            return None;
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let mut t = Table::new(bytes[8..24].try_into().expect("16 bytes"));
        t.touched = Duration::from_nanos(word(24));
        t.tat = Duration::from_nanos(word(32));
        t.last_slot = Duration::from_nanos(word(40));
        t.taken = word(48);
        t.departed = Duration::from_nanos(word(56));
        for (i, r) in t.runs.iter_mut().enumerate() {
            let at = HEADER + i * RUN_BYTES;
            *r = Run {
                id: word(at),
                heartbeat: Duration::from_nanos(word(at + 8)),
                waiting: word(at + 16) != 0,
                last_taken: word(at + 24),
                period: Duration::from_nanos(word(at + 32)),
                settled: word(at + 40) != 0,
            };
        }
        // A torn or foreign write: slots out of order are no schedule.
        (t.last_slot <= t.tat).then_some(t)
    }

    /// Forgets what another boot, or a schedule nobody used for long, left: its times mean
    /// nothing now, and a slot far in the future would stop every run.
    pub(super) fn refresh(&mut self, boot: [u8; 16], now: Duration) {
        let widest = self.runs.iter().map(|r| r.period).max().unwrap_or_default();
        let ahead = FAR.max(widest.saturating_mul(2));
        let far = self.tat > now + ahead || self.departed > now + ahead;
        if self.boot != boot || self.touched > now || now - self.touched > FORGOTTEN || far {
            *self = Table::new(boot);
        }
        self.touched = now;
    }

    pub(super) fn stale(r: &Run, now: Duration) -> bool {
        r.id == 0 || now.saturating_sub(r.heartbeat) > STALE.max(r.period * 3)
    }

    /// This run's record, made (in a free or stale place) if it has none.
    pub(super) fn enter(&mut self, me: u64, now: Duration) -> Option<&mut Run> {
        let at = self
            .runs
            .iter()
            .position(|r| r.id == me)
            .or_else(|| self.runs.iter().position(|r| Table::stale(r, now)))?;
        let run = &mut self.runs[at];
        if run.id != me {
            *run = Run {
                id: me,
                last_taken: self.taken,
                ..Run::default()
            };
        }
        run.heartbeat = now;
        Some(run)
    }

    pub(super) fn live_waiting(&self, now: Duration) -> impl Iterator<Item = &Run> {
        self.runs
            .iter()
            .filter(move |r| r.waiting && !Table::stale(r, now))
    }

    /// The next slot as `me` sees it: as it is when the turn is its own (or turns are not
    /// kept), a grace later when another live run waiting for slots had one less recently.
    pub(super) fn next_for(&self, me: u64, now: Duration, lead: Duration) -> Option<Duration> {
        if self.tat.is_zero() {
            return None;
        }
        let turn = self
            .live_waiting(now)
            .min_by_key(|r| (r.last_taken, r.id))
            .map(|r| r.id);
        match turn {
            Some(id) if id != me && self.runs.iter().any(|r| r.id == me) => {
                Some(self.tat + GRACE + lead)
            }
            _ => Some(self.tat),
        }
    }
}
