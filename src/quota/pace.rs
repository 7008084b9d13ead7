//! The pacer: when each counted request may leave, as governor's GCRA limiter decides it.
//!
//! The limiter is governor's, with a burst of one (`Quota::with_period(..).allow_burst(1)`), so
//! that it paces from the first request: no burst at start-up, and no two requests closer than
//! the period, which is what a zero-burst limiter on the provider's side (nginx's `limit_req`
//! without `burst`) demands. Its state, the theoretical arrival time of the next request, lives
//! in a [`Schedule`] rather than in governor's own cell, for two reasons:
//!
//! - **The period changes** while the run goes on (the learned margin, another job joining), and
//!   a governor quota cannot be changed in place. A new limiter is swapped in over the same
//!   schedule, so it continues where the old one stopped instead of starting full.
//! - **Jobs that share a provider account share its schedule.** The schedule can be a small
//!   file in the ledger's directory, locked for each decision, holding the next slot in
//!   `CLOCK_MONOTONIC` time (which every process on the machine reads alike) and one record per
//!   live run. Two jobs then take turns on one sequence of slots: the run that took a slot
//!   least recently has the next one, and another may take it only if that run lets it pass by
//!   [`GRACE`]. Each run publishes the period it wants, and all pace at the widest of them.
//!
//! A slot is granted before it is due (its *lead*, up to a period): a paid request records its
//! intent in the journal in that time, then waits for its slot, so that the commit neither
//! delays the request nor blurs the pacing. The lead shifts the limiter's clock, never the
//! slots.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::util::sync::lock;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

mod table;

use table::{Run, TABLE_BYTES, Table, nanos};

/// How long a run that is not the next in turn waits past a slot for the run whose turn it is.
pub const GRACE: Duration = Duration::from_millis(2);
/// How many runs of one account the schedule keeps track of; more still pace, without turns.
const MAX_RUNS: usize = 16;
/// A run that has not asked for a slot for this long (or three periods, if longer) has no turn.
const STALE: Duration = Duration::from_secs(2);
/// A schedule untouched for this long starts afresh: no run of it is alive.
const FORGOTTEN: Duration = Duration::from_secs(600);
/// A next slot further ahead than this, and than two of the widest period any run wants, is
/// no schedule's doing: it is forgotten rather than left to stop every run.
const FAR: Duration = Duration::from_secs(120);
/// How long a run waits for another to release the schedule's file. A decision holds it for
/// microseconds; a process stopped while holding it (Ctrl-Z) must not stop this one.
const LOCK_WAIT: Duration = Duration::from_millis(100);
/// How late a slot may be asked for and still be granted at its due time rather than at the
/// time it was asked: about what a thread's timed wake-up takes on a busy machine (0.2 ms
/// typically, 0.4 ms at the 90th percentile on two cores), well under a lead, so that the
/// request's intent still commits before the slot. Later than that, the schedule was idle and
/// its slot passed unused.
const CATCH_UP: Duration = Duration::from_millis(1);
/// Below this period (a thousand requests a second) the schedule is not shared: no account
/// quota is that large, and a file lock per request would be the bottleneck.
const SHARED_BELOW: Duration = Duration::from_millis(1);

/// Machine-wide monotonic time: the same for every process, unaffected by clock changes.
pub fn mono_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or_default(),
        u32::try_from(t.tv_nsec).unwrap_or_default(),
    )
}

/// Where a schedule is kept.
enum Store {
    Local(Mutex<Table>),
    /// A file every job of the account opens; `fallback` serves if it cannot be used.
    Shared {
        file: File,
        path: PathBuf,
        fallback: Mutex<Option<Table>>,
    },
}

/// A shared schedule's table, read under its file's lock; the lock goes with the guard, even
/// on a panic, so that no other job waits on a run that failed.
struct Locked<'a> {
    file: &'a File,
    table: Table,
}

impl Locked<'_> {
    fn write(&self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(&self.table.encode(), 0)
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// An account's schedule of slots, as one run sees it.
pub struct Schedule {
    store: Store,
    me: u64,
    boot: [u8; 16],
}

/// The machine's boot id, where the system says it.
fn boot_id() -> [u8; 16] {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let mut id = [0u8; 16];
    for (i, b) in text
        .trim()
        .bytes()
        .filter(|b| *b != b'-')
        .take(32)
        .enumerate()
    {
        let v = (b as char).to_digit(16).unwrap_or(0) as u8;
        id[i / 2] |= v << if i % 2 == 0 { 4 } else { 0 };
    }
    id
}

fn new_run_id() -> u64 {
    rand::random::<u64>().max(1)
}

impl Schedule {
    /// A schedule this run keeps to itself.
    pub fn local() -> Schedule {
        Schedule::private(new_run_id(), boot_id())
    }

    /// A schedule of its own for the run `me` of this one. The run keeps its id: a second id
    /// in one table would read as another run, whose turn every slot would wait a grace for.
    fn alone(&self) -> Schedule {
        Schedule::private(self.me, self.boot)
    }

    fn private(me: u64, boot: [u8; 16]) -> Schedule {
        Schedule {
            store: Store::Local(Mutex::new(Table::new(boot))),
            me,
            boot,
        }
    }

    /// The schedule every job of an account on this machine shares, in a file beside the
    /// account's usage ledger; this run's own if that file cannot be used.
    pub fn of_account(ledger_dir: &Path, account: &str) -> Schedule {
        let path = ledger_dir.join(format!("pace-{account}.bin"));
        Schedule::shared(&path).unwrap_or_else(|e| {
            unshared(&path, &e);
            Schedule::local()
        })
    }

    /// The schedule in the file at `path`, created private if it is not there.
    fn shared(path: &Path) -> std::io::Result<Schedule> {
        let mut options = File::options();
        options.read(true).write(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path)?;
        let schedule = Schedule {
            store: Store::Shared {
                file,
                path: path.to_path_buf(),
                fallback: Mutex::new(None),
            },
            me: new_run_id(),
            boot: boot_id(),
        };
        if let Store::Shared { file, .. } = &schedule.store {
            schedule.open_shared(file)?.write()?;
        }
        Ok(schedule)
    }

    /// The shared table, read under the file's lock, which the guard holds until dropped.
    fn open_shared<'a>(&self, file: &'a File) -> std::io::Result<Locked<'a>> {
        use std::os::unix::fs::FileExt;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        format!("another job held it for over {} ms", LOCK_WAIT.as_millis()),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        let mut locked = Locked {
            file,
            table: Table::new(self.boot),
        };
        let mut bytes = vec![0u8; TABLE_BYTES];
        let n = file.read_at(&mut bytes, 0)?;
        if let Some(table) = Table::decode(&bytes[..n]) {
            locked.table = table;
        }
        locked.table.refresh(self.boot, mono_now());
        Ok(locked)
    }

    /// Runs `f` on the schedule's state, under its lock. A shared file that fails is given up
    /// for the rest of the run: pacing goes on alone, from the last state it read, and the
    /// sharing is what is lost.
    fn with<R>(&self, f: impl FnOnce(&mut Table) -> R) -> R {
        match &self.store {
            Store::Local(table) => {
                let mut t = lock(table);
                t.touched = mono_now();
                f(&mut t)
            }
            Store::Shared {
                file,
                path,
                fallback,
            } => {
                let mut fb = lock(fallback);
                if let Some(t) = fb.as_mut() {
                    t.touched = mono_now();
                    return f(t);
                }
                match self.open_shared(file) {
                    Ok(mut locked) => {
                        let r = f(&mut locked.table);
                        if let Err(e) = locked.write() {
                            unshared(path, &e);
                            *fb = Some(locked.table.clone());
                        }
                        r
                    }
                    Err(e) => {
                        unshared(path, &e);
                        f(fb.insert(Table::new(self.boot)))
                    }
                }
            }
        }
    }

    fn is_shared(&self) -> bool {
        matches!(&self.store, Store::Shared { .. })
    }
}

fn unshared(path: &Path, e: &std::io::Error) {
    tracing::warn!(
        "the account's schedule {} cannot be used ({e}); this job paces alone, and jobs on the \
         same account may together pass its per-second and per-minute quotas",
        path.display()
    );
}

/// governor's clock: machine-wide monotonic time, shifted by the lead, so that the limiter
/// grants each slot `lead` before it is due. It records its first reading, the limiter's
/// start, so that the schedule's absolute times can be turned into the limiter's. That reading
/// is taken with no lead ([`Pacer::limiter`]): governor counts time from the start and reads
/// any earlier time as the start itself, so a start read with a paid request's lead of a whole
/// period put the poll granted next a period late, and the slot after it too. With the margin
/// creeping back after a 429, which swaps the limiter at every answer, a job alternating paid
/// requests and polls lost one slot in three.
#[derive(Clone)]
struct PaceClock {
    lead: Arc<AtomicU64>,
    origin: Arc<OnceLock<Duration>>,
}

impl Clock for PaceClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        let t = mono_now() + Duration::from_nanos(self.lead.load(Ordering::Relaxed));
        self.origin.get_or_init(|| t);
        t
    }
}

/// governor's state store over a schedule: what it reads is the next slot as this run sees it,
/// what it writes is the slot after the one it grants.
struct View {
    schedule: Arc<Schedule>,
    clock: PaceClock,
    period: Duration,
    /// The time of the slot last granted through this view.
    granted: Arc<Mutex<Option<Duration>>>,
}

impl StateStore for View {
    type Key = NotKeyed;

    fn measure_and_replace<T, F, E>(&self, _key: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let origin = *self.clock.origin.get_or_init(mono_now);
        let lead = Duration::from_nanos(self.clock.lead.load(Ordering::Relaxed));
        let me = self.schedule.me;
        self.schedule.with(|table| {
            let now = mono_now();
            let next = table.next_for(me, now, lead);
            let seen = next.map(|t| Nanos::from(t.saturating_sub(origin)));
            let (value, after) = f(seen)?;
            let mut after = origin + Duration::from(after);
            // A grant asked for a little after its slot was due keeps the slot: the lateness
            // is the grant thread's wake-up, and kept it would push every later slot back.
            if let Some(due) = next
                && after.saturating_sub(self.period + due) <= CATCH_UP
            {
                after = after.min(due + self.period);
            }
            table.tat = after;
            table.last_slot = after.saturating_sub(self.period);
            table.taken += 1;
            let taken = table.taken;
            if let Some(run) = table.enter(me, now) {
                run.last_taken = taken;
            }
            *lock(&self.granted) = Some(table.last_slot);
            Ok(value)
        })
    }
}

type Limiter = RateLimiter<NotKeyed, View, PaceClock, NoOpMiddleware<Duration>>;

/// What the live runs of an account agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The period to pace at.
    pub period: Duration,
    /// The live runs waiting for slots, this one among them.
    pub runs: usize,
    /// The widest period the others learned, if any has.
    pub learned: Option<Duration>,
}

/// One run's pacer over a schedule.
pub struct Pacer {
    schedule: Arc<Schedule>,
    /// Used instead of `schedule` while the period is too short to share (see [`SHARED_BELOW`]).
    alone: Arc<Schedule>,
    limiter: Limiter,
    period: Duration,
    lead: Arc<AtomicU64>,
    granted: Arc<Mutex<Option<Duration>>>,
    /// Whether the run last told the schedule it waits for slots.
    waiting: bool,
    /// When the next slot is due at the earliest, as the last take saw it: until then no take
    /// can succeed, and the schedule need not be read.
    next: Option<Duration>,
}

impl Pacer {
    /// A pacer at `period` over `schedule`, which it shares when `schedule` is the account's.
    pub fn new(schedule: Schedule, period: Duration) -> Pacer {
        let schedule = Arc::new(schedule);
        let lead = Arc::new(AtomicU64::new(0));
        let granted = Arc::new(Mutex::new(None));
        let alone = if schedule.is_shared() {
            Arc::new(schedule.alone())
        } else {
            schedule.clone()
        };
        let limiter = Pacer::limiter(&schedule, &alone, &lead, &granted, period);
        Pacer {
            schedule,
            alone,
            limiter,
            period,
            lead,
            granted,
            waiting: false,
            next: None,
        }
    }

    fn which(schedule: &Arc<Schedule>, alone: &Arc<Schedule>, period: Duration) -> Arc<Schedule> {
        if period < SHARED_BELOW {
            alone.clone()
        } else {
            schedule.clone()
        }
    }

    fn limiter(
        schedule: &Arc<Schedule>,
        alone: &Arc<Schedule>,
        lead: &Arc<AtomicU64>,
        granted: &Arc<Mutex<Option<Duration>>>,
        period: Duration,
    ) -> Limiter {
        let period = period.max(Duration::from_nanos(1));
        // The next take stores its own lead; see `PaceClock`.
        lead.store(0, Ordering::Relaxed);
        let clock = PaceClock {
            lead: lead.clone(),
            origin: Arc::new(OnceLock::new()),
        };
        let view = View {
            schedule: Pacer::which(schedule, alone, period),
            clock: clock.clone(),
            period,
            granted: granted.clone(),
        };
        let quota = Quota::with_period(period)
            .expect("a period of at least a nanosecond")
            .allow_burst(std::num::NonZeroU32::MIN);
        RateLimiter::new(quota, view, clock)
    }

    /// Says the period this run wants (`settled`: learned, not a start-up ramp's), and paces
    /// at the widest of it and those the other live runs of the account learned. A period that
    /// widens also moves the pending slot, so that the next request keeps the new spacing from
    /// the last one.
    pub fn agree(&mut self, wanted: Duration, settled: bool) -> Agreed {
        let me = self.schedule.me;
        let schedule = Pacer::which(&self.schedule, &self.alone, wanted);
        let agreed = schedule.with(|table| {
            let now = mono_now();
            if let Some(run) = table.enter(me, now) {
                run.waiting = true;
                run.period = wanted;
                run.settled = settled;
            }
            let others: Vec<&Run> = table.live_waiting(now).filter(|r| r.id != me).collect();
            let learned = others.iter().filter(|r| r.settled).map(|r| r.period).max();
            let agreed = Agreed {
                period: learned.map_or(wanted, |p| p.max(wanted)),
                runs: others.len() + 1,
                learned,
            };
            if !table.tat.is_zero() && table.tat.saturating_sub(table.last_slot) < agreed.period {
                table.tat = table.last_slot + agreed.period;
            }
            agreed
        });
        self.waiting = true;
        if agreed.period != self.period {
            self.next = None;
            self.period = agreed.period;
            self.limiter = Pacer::limiter(
                &self.schedule,
                &self.alone,
                &self.lead,
                &self.granted,
                agreed.period,
            );
        }
        agreed
    }

    /// The period it paces at: the one the account's live runs last agreed on.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Takes the next slot if it can be granted now, `lead` before it is due: `Ok` with the
    /// slot's time, or `Err` with the (monotonic) time to ask again.
    pub fn take(&mut self, lead: Duration) -> Result<Duration, Duration> {
        self.lead.store(nanos(lead), Ordering::Relaxed);
        let taken = match self.limiter.check() {
            Ok(()) => Ok(lock(&self.granted).take().unwrap_or_else(mono_now)),
            Err(not_until) => Err(not_until.earliest_possible().saturating_sub(lead)),
        };
        self.next = Some(match taken {
            Ok(slot) => slot + self.period,
            Err(when) => when + lead,
        });
        taken
    }

    /// When to ask again for a slot `lead` ahead, if the last take says it is too early yet:
    /// the grant loop, woken for something else, then neither agrees nor takes, which would
    /// read and write the shared schedule for nothing. Another run can only make the slot
    /// later, or earlier by a narrower period agreed, which the next take finds.
    pub fn too_early(&self, lead: Duration) -> Option<Duration> {
        let ask = self.next?.saturating_sub(lead);
        (mono_now() < ask).then_some(ask)
    }

    /// When a counted request whose slot has come may leave: now, or a period (less `slack`,
    /// at most a tenth of it, for the timer's rounding) after the account's last departure,
    /// whichever job's, if that one left late. The departure is reserved for it.
    pub fn depart(&self, slack: Duration) -> Duration {
        let gap = self.period.saturating_sub(slack.min(self.period / 10));
        Pacer::which(&self.schedule, &self.alone, self.period).with(|table| {
            let now = mono_now();
            let due = if table.departed.is_zero() {
                now
            } else {
                (table.departed + gap).max(now)
            };
            table.departed = due;
            due
        })
    }

    /// A request reserved to leave earlier really left at `at` (a timer wakes on its tick,
    /// after the time it was set for): the next departure keeps its distance from this one.
    pub fn departed(&self, at: Duration) {
        Pacer::which(&self.schedule, &self.alone, self.period).with(|table| {
            table.departed = table.departed.max(at);
        });
    }

    /// The run is done with the account: its record goes, so that the others neither keep
    /// its turns nor its period.
    pub fn leave(&mut self) {
        let me = self.schedule.me;
        self.waiting = false;
        self.schedule.with(|table| {
            if let Some(run) = table.runs.iter_mut().find(|r| r.id == me) {
                *run = Run::default();
            }
        });
    }

    /// The run has nothing to send for now: its turns pass to the others. A run paced too
    /// fast to share ([`SHARED_BELOW`]) has no turn in the account's file to pass, and writes
    /// nothing to it: an unpaced job goes idle every few requests.
    pub fn idle(&mut self) {
        if !self.waiting {
            return;
        }
        self.waiting = false;
        self.next = None;
        let me = self.schedule.me;
        Pacer::which(&self.schedule, &self.alone, self.period).with(|table| {
            if let Some(run) = table.enter(me, mono_now()) {
                run.waiting = false;
            }
        });
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests;
