//! The outcomes a batch keeps (`kept`) read as the same outcomes written into the rows: seeded
//! runs of batches accepted or not, answered, polled again, sent again, closed and killed,
//! written by a journal of format 4 and by the same journal's writer of format 3, which
//! writes every move into the rows, and read back through every reader of a row's state.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const ROWS: u64 = 60;
const SEEDS: u64 = 40;

/// What the script knows of a row, to make only moves the writer allows.
#[derive(Clone, Copy, PartialEq)]
enum Row {
    Planned,
    /// In a batch whose upload is only intended.
    Sending(i64),
    /// In an accepted batch, without an outcome.
    Running(i64),
    /// With an outcome: final or not, in its batch, still open or not.
    Answered(i64, Status),
    Held,
    Duplicate,
}

/// A batch: its rows, whether the provider accepted it, whether it was closed.
struct Batch {
    id: i64,
    rows: Vec<RowKey>,
    accepted: bool,
    closed: bool,
}

/// The changes of one run, made the same way to both journals.
#[derive(Clone)]
enum Step {
    Intent(Vec<RowKey>, i64),
    Running(Vec<RowKey>, i64, u32),
    Revert(Vec<RowKey>, i64),
    Unconfirmed(Vec<RowKey>, i64),
    Done(RowKey, Outcome),
    Closed(i64),
}

struct Script {
    rng: StdRng,
    rows: Vec<Row>,
    batches: Vec<Batch>,
    /// Pending rows answered again, and errors sent again: the rows whose kept outcome the
    /// writer writes back into them.
    polled_again: u32,
    sent_again: u32,
}

impl Script {
    fn new(seed: u64) -> Script {
        let mut rng = StdRng::seed_from_u64(seed);
        let rows = (0..ROWS)
            .map(|i| {
                if i > 0 && rng.random_bool(0.1) {
                    Row::Duplicate
                } else {
                    Row::Planned
                }
            })
            .collect();
        Script {
            rng,
            rows,
            batches: Vec::new(),
            polled_again: 0,
            sent_again: 0,
        }
    }

    /// The plan: a duplicate repeats the identifier of the row before it.
    fn plan(&self) -> Vec<(RowKey, RowPlan)> {
        let mut ident = 0u8;
        (0..ROWS)
            .map(|i| {
                if self.rows[i as usize] != Row::Duplicate {
                    ident += 1;
                }
                (RowKey::new(0, i), RowPlan::Subject(hash(ident)))
            })
            .collect()
    }

    fn outcome(&mut self) -> Outcome {
        let status = [
            Status::Verified,
            Status::NotVerified,
            Status::Pending,
            Status::Error,
        ][self.rng.random_range(0..4)];
        let mut o = Outcome::new(status).with_message(format!("m{}", self.rng.random_range(0..3)));
        if self.rng.random_bool(0.3) {
            o = o.with_request_id(format!("own-{}", self.rng.random_range(0..100)));
        }
        if status == Status::Verified && self.rng.random_bool(0.5) {
            o = o.with_fields(vec![(
                "name".into(),
                format!("N{}", self.rng.random_range(0..9)),
            )]);
        }
        o
    }

    /// Whether a row may go in a new batch: planned, or answered with an error in a batch
    /// that was closed.
    fn sendable(&self, i: usize) -> bool {
        match self.rows[i] {
            Row::Planned => true,
            Row::Answered(b, Status::Error) => self.batches.iter().any(|x| x.id == b && x.closed),
            _ => false,
        }
    }

    /// One run's changes.
    fn run(&mut self) -> Vec<Step> {
        let mut steps = Vec::new();
        for _ in 0..self.rng.random_range(1..4) {
            let mut keys = Vec::new();
            let start = self.rng.random_range(0..ROWS as usize);
            for i in (start..ROWS as usize).chain(0..start) {
                if keys.len() < self.rng.random_range(1..10) && self.sendable(i) {
                    keys.push(RowKey::new(0, i as u64));
                }
            }
            if keys.is_empty() {
                break;
            }
            keys.sort();
            self.sent_again += keys
                .iter()
                .filter(|k| matches!(self.rows[k.0 as usize], Row::Answered(..)))
                .count() as u32;
            let id = self.batches.len() as i64 + 1;
            steps.push(Step::Intent(keys.clone(), id));
            for k in &keys {
                self.rows[k.0 as usize] = Row::Sending(id);
            }
            let accepted = self.rng.random_bool(0.8);
            if accepted {
                steps.push(Step::Running(keys.clone(), id, self.rng.random_range(1..4)));
                for k in &keys {
                    self.rows[k.0 as usize] = Row::Running(id);
                }
            } else if self.rng.random_bool(0.5) {
                steps.push(Step::Revert(keys.clone(), id));
                for k in &keys {
                    self.rows[k.0 as usize] = Row::Planned;
                }
            } else {
                steps.push(Step::Unconfirmed(keys.clone(), id));
                for k in &keys {
                    self.rows[k.0 as usize] = Row::Held;
                }
            }
            self.batches.push(Batch {
                id,
                rows: keys,
                accepted,
                closed: !accepted,
            });
        }
        // Answers, to rows in flight and to pending rows polled again.
        for i in 0..ROWS as usize {
            let b = match self.rows[i] {
                Row::Running(b) | Row::Answered(b, Status::Pending) => b,
                _ => continue,
            };
            if self.batches.iter().any(|x| x.id == b && !x.closed) && self.rng.random_bool(0.8) {
                if self.rows[i] != Row::Running(b) {
                    self.polled_again += 1;
                }
                let o = self.outcome();
                self.rows[i] = Row::Answered(b, o.status);
                steps.push(Step::Done(RowKey::new(0, i as u64), o));
            }
        }
        // Accepted batches whose rows all have a final outcome are closed, some of them.
        for x in &mut self.batches {
            let done = x.rows.iter().all(|k| {
                matches!(self.rows[k.0 as usize], Row::Answered(_, s) if s != Status::Pending)
                    || !matches!(self.rows[k.0 as usize], Row::Answered(b, _) if b == x.id)
            });
            if x.accepted && !x.closed && done && self.rng.random_bool(0.6) {
                x.closed = true;
                steps.push(Step::Closed(x.id));
            }
        }
        steps
    }
}

/// Makes `steps` with a writer of `j`; a killed run commits them and stops, as a run killed
/// after its last commit.
async fn write(j: &Journal, steps: &[Step], killed: bool) {
    let (w, thread) = j.writer().unwrap();
    for step in steps.iter().cloned() {
        match step {
            Step::Intent(keys, b) => {
                w.intent(keys, Some(b), None).await.unwrap();
            }
            Step::Running(keys, b, attempts) => {
                w.running(keys, Some(b), format!("req-{b}"), attempts)
            }
            Step::Revert(keys, b) => w.revert(keys, Some(b)),
            Step::Unconfirmed(keys, b) => w.unconfirmed(keys, Some(b), None),
            Step::Done(key, o) => w.done(key, o, None),
            Step::Closed(b) => w.batch_closed(b, BatchState::Done),
        }
    }
    if killed {
        w.committed().await.unwrap();
        drop(w);
    } else {
        w.close().await.unwrap();
    }
    thread.join();
}

/// Everything the readers of a row's state give, with times as whether there is one.
fn read(j: &Journal) -> String {
    let mut out = String::new();
    for r in j.reader().unwrap().page(None, 1000).unwrap() {
        out += &format!(
            "page {:?} {} {:?} {:?} {:?} {}\n",
            r.key, r.state, r.status, r.request_id, r.batch_id, r.batch_open
        );
    }
    let reader = j.reader().unwrap();
    let needs: [fn(&RowRecord) -> bool; 3] = [
        |r| r.state == RowState::Planned,
        |r| r.status == Some(Status::Pending),
        |r| r.batch_open,
    ];
    for n in needs {
        out += &format!("count {}\n", reader.count(n).unwrap());
    }
    for r in export(j) {
        out += &format!(
            "export {:?} {:?} {} {:?} {:?} {:?} {:?} {:?} {} {} {:?} {}\n",
            r.key,
            r.duplicate_of,
            r.state,
            r.status,
            r.reason,
            r.message,
            r.provider_status,
            r.request_id,
            r.checked_at.is_some(),
            r.attempts,
            named(j, &r),
            r.reused
        );
    }
    let mut groups: Vec<String> = j
        .outcome_groups()
        .unwrap()
        .into_iter()
        .map(|g| {
            format!(
                "group {} {:?} {:?} {} {}\n",
                g.state, g.status, g.reason, g.rows, g.duplicates
            )
        })
        .collect();
    groups.sort();
    out += &groups.concat();
    let names = j.field_numbers().unwrap();
    for o in j.obtained_answers(None, &names).unwrap() {
        let a = o.answer;
        out += &format!(
            "answer {:?} {:?} {:?} {:?} {}\n",
            a.key, a.ident, a.outcome.status, a.outcome.request_id, o.values
        );
    }
    out += &format!("unsent {:?}\n", j.unsent_idents(None).unwrap());
    for b in j.open_batches().unwrap() {
        out += &format!("open {} {:?}\n", b.batch_id, b.rows);
    }
    out
}

#[tokio::test]
async fn kept_outcomes_read_as_outcomes_written_into_rows() {
    let (mut polled_again, mut sent_again, mut chunks, mut leaders) = (0, 0, 0, 0);
    for seed in 0..SEEDS {
        let dir = tempfile::tempdir().unwrap();
        let mut script = Script::new(seed);
        let plan_rows = script.plan();
        let mut kept = Journal::open(&dir.path().join("kept"), &ID, false).unwrap();
        let mut written = Journal::open(&dir.path().join("written"), &ID, false).unwrap();
        plan(&mut kept, &plan_rows);
        plan(&mut written, &plan_rows);
        written.set_meta("format", schema::MEMBERS).unwrap();
        for run in 0..4 {
            let steps = script.run();
            let killed = script.rng.random_bool(0.4);
            for j in [&mut kept, &mut written] {
                write(j, &steps, killed).await;
                if killed {
                    j.recover(false).unwrap();
                }
            }
            let (k, w) = (read(&kept), read(&written));
            if k != w {
                let diff: Vec<_> = k
                    .lines()
                    .zip(w.lines())
                    .filter(|(a, b)| a != b)
                    .map(|(a, b)| format!("  kept:    {a}\n  written: {b}"))
                    .collect();
                panic!("seed {seed}, run {run}:\n{}", diff.join("\n"));
            }
        }
        let count = |j: &Journal| -> i64 {
            j.conn
                .query_row("SELECT count(*) FROM kept", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count(&written), 0, "seed {seed}: format 3 keeps nothing");
        chunks += count(&kept);
        leaders += kept
            .conn
            .query_row("SELECT count(*) FROM kept_leaders", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap();
        polled_again += script.polled_again;
        sent_again += script.sent_again;
    }
    assert!(
        chunks > 0 && leaders > 0 && polled_again > 20 && sent_again > 20,
        "the runs kept outcomes ({chunks} chunks and {leaders} leaders' left), and wrote some \
         back: {polled_again} answered again, {sent_again} sent again"
    );
}
